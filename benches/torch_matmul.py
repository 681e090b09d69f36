"""Torch side of `scripts/device-check.sh`: bf16 GEMM TFLOP/s on the same GPU, in the same device call.

Prints one JSON line like `entrl bench matmul --json` writes, timed the same way (CUDA events, warm-up,
median of repetitions).
"""
import argparse
import json

import torch
from cuda_timing import timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=8192)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--k", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    x = torch.randn(a.m, a.k, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(a.k, a.n, device="cuda", dtype=torch.bfloat16)
    ms = timed(lambda: x @ y, a.reps)
    tflops = 2 * a.m * a.n * a.k / (ms * 1e-3) / 1e12
    print(json.dumps({"bench": "matmul", "impl": "torch", "dtype": "bf16", "m": a.m, "n": a.n, "k": a.k,
                      "ms": round(ms, 4), "tflops": round(tflops, 2), "gpu": torch.cuda.get_device_name(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
