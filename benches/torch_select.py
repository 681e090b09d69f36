"""Torch side of `entrl bench select`: top and bottom 20% of N uniform f32 scores, and a full sort.

torch.topk largest + torch.topk smallest (sorted=False, the PyTorch both-tails anchor of
../shared/docs/kernels.md §4/§7) and torch.sort (values + indices; stable=True, the counterpart of
entrl's radix_sort). One JSON line per op. CUDA events, warm-up, median of --reps.
"""
import argparse
import json
import math

import torch
from cuda_timing import timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4_194_304)
    ap.add_argument("--frac", type=float, default=0.2)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    gpu = torch.cuda.get_device_name()
    gen = torch.Generator(device="cuda").manual_seed(a.seed)
    x = torch.rand(a.n, device="cuda", dtype=torch.float32, generator=gen)
    k = math.ceil(a.frac * a.n)

    def both_tails():
        top = torch.topk(x, k, largest=True, sorted=False)
        bottom = torch.topk(x, k, largest=False, sorted=False)
        return top, bottom

    def full_sort():
        return torch.sort(x, stable=True)

    with torch.no_grad():
        rows = [
            ("torch_topk_both", timed(both_tails, a.reps, warmup=5)),
            ("torch_sort", timed(full_sort, a.reps, warmup=5)),
        ]
    for impl, ms in rows:
        print(json.dumps({"bench": "select", "impl": impl, "n": a.n, "frac": a.frac, "k": k, "ms": round(ms, 4),
                          "gpu": gpu, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
