"""Torch side of `entrl bench attention`, for the same shapes in the same device call.

For each shape: SDPA with the flash (FA2) backend and the cuDNN backend (KV heads expanded to the query
heads, as the anchors in ../shared/docs/kernels.md were measured), forward and forward+backward, and the
eager materialise-then-entropy path (fp32 scores, causal mask, softmax, -sum p log p, P.V; forward only,
no grad) with its extra memory. One JSON line per (shape, impl, mode). CUDA events, warm-up, median.
"""
import argparse
import json

import torch
from cuda_timing import timed
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [[1024], [2048], [4096], [8192], [1024] * 8]


def eager_entropy(q, k, v):
    """q, k, v [B, H, S, D] bf16 -> (o, entropy); materialises the fp32 S x S probabilities."""
    s = (q.float() @ k.float().transpose(-1, -2)) / q.shape[-1] ** 0.5
    n = s.shape[-1]
    mask = torch.ones(n, n, device=q.device, dtype=torch.bool).triu(1)
    s = s.masked_fill(mask, float("-inf"))
    p = s.softmax(-1)
    h = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
    return (p @ v.float()).to(q.dtype), h


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    gpu = torch.cuda.get_device_name()
    for lens in SHAPES:
        b, s, h, d = len(lens), lens[0], a.heads, a.head_dim
        label = f"S={s}" if b == 1 else f"{b}x{s}"
        flops = b * 2.0 * s * s * h * d  # 4 S^2 H d, halved for causal
        q = torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(b, a.kv_heads, s, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(b, a.kv_heads, s, d, device="cuda", dtype=torch.bfloat16)
        rep = h // a.kv_heads
        k = k.repeat_interleave(rep, dim=1).requires_grad_(True)
        v = v.repeat_interleave(rep, dim=1).requires_grad_(True)
        do = torch.randn_like(q)
        rows = []
        for name, backend in [("torch_flash", SDPBackend.FLASH_ATTENTION), ("torch_cudnn", SDPBackend.CUDNN_ATTENTION)]:
            try:
                with sdpa_kernel(backend):
                    with torch.no_grad():
                        fwd = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), a.reps)

                    def fb():
                        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                        o.backward(do)
                        q.grad = k.grad = v.grad = None

                    fwd_bwd = timed(fb, a.reps)
                rows += [(name, "fwd", fwd, flops), (name, "fwd_bwd", fwd_bwd, 3.5 * flops)]
            except Exception as e:  # a backend may be unavailable for a shape
                print(json.dumps({"bench": "attention", "impl": name, "shape": label, "error": str(e)[:200]}))
        with torch.no_grad():
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            eager = timed(lambda: eager_entropy(q, k, v), max(3, a.reps // 4))
            extra = (torch.cuda.max_memory_allocated() - base) / 2**30
        rows.append(("torch_eager_entropy", "fwd_entropy", eager, flops))
        for impl, mode, ms, fl in rows:
            line = {"bench": "attention", "impl": impl, "shape": label, "mode": mode, "ms": round(ms, 4),
                    "tflops": round(fl / (ms * 1e-3) / 1e12, 2), "gpu": gpu, "torch": torch.__version__}
            if impl == "torch_eager_entropy":
                line["extra_gib"] = round(extra, 2)
            print(json.dumps(line))
        del q, k, v, do
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
