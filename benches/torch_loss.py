"""Torch side of `entrl bench loss`: eager LM head + log-softmax + gather + weighted DAPO loss, fwd+bwd.

Same shapes as the entrl bench (T=8192, H=4096, V=151936, bf16), in the same device call: time (CUDA
events, median) and extra memory (peak allocated during a step minus what the inputs hold).
"""
import argparse
import json

import torch
from cuda_timing import timed


def dapo(logp, old, adv, mask, w, eps_low=0.2, eps_high=0.28, c=10.0):
    nkl = torch.clamp(logp - old, -20.0, 20.0)
    ratio = torch.exp(nkl)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    clip1 = torch.maximum(pg1, pg2)
    clip2 = torch.minimum(-adv * c, clip1)
    pg = torch.where(adv < 0, clip2, clip1)
    return (pg * mask * w).sum() / mask.sum()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    t, h, v = a.tokens, a.hidden, a.vocab
    x = torch.randn(t, h, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (0.02 * torch.randn(v, h, device="cuda")).to(torch.bfloat16).requires_grad_(True)
    y = (torch.arange(t, device="cuda") * 7919) % v
    old = torch.full((t,), -torch.log(torch.tensor(float(v))).item(), device="cuda")
    adv = torch.rand(t, device="cuda") * 2 - 1
    ones = torch.ones(t, device="cuda")

    def step():
        logits = (x @ w.T).float()
        logp = torch.log_softmax(logits, -1).gather(-1, y[:, None])[:, 0]
        dapo(logp, old, adv, ones, ones).backward()
        x.grad = w.grad = None

    step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    extra = (torch.cuda.max_memory_allocated() - base) / 2**30
    ms = timed(step, a.reps, warmup=0)
    print(json.dumps({"bench": "loss", "impl": "torch_eager", "tokens": t, "hidden": h, "vocab": v, "ms": round(ms, 3),
                      "tflops": round(6 * t * h * v / (ms * 1e-3) / 1e12, 1), "extra_gib": round(extra, 3),
                      "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
