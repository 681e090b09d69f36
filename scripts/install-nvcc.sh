#!/usr/bin/env bash
# Install the pinned nvcc 13.0 from PyPI into a venv (no CUDA install, no GPU needed) and print its path.
# Pins and traps: ../shared/docs/toolchain.md §3. Usage: NVCC=$(scripts/install-nvcc.sh)
set -euo pipefail
VENV="${ENTRL_NVCC_VENV:-$HOME/.cache/entrl/nvcc-venv}"
nvcc_path() { ls -d "$VENV"/lib/python3*/site-packages/nvidia/cu13 2>/dev/null | head -n1; }
if [ -z "$(nvcc_path)" ] || ! "$(nvcc_path)/bin/nvcc" --version 2>/dev/null | grep -q 'V13.0.88'; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    'nvidia-cuda-nvcc==13.0.88' 'nvidia-nvvm==13.0.88' 'nvidia-cuda-crt==13.0.88' \
    'nvidia-cuda-runtime==13.0.96' 'nvidia-cuda-cccl==13.0.85' >&2
fi
N=$(nvcc_path)
"$N/bin/nvcc" --version | grep -q 'V13.0.88' || { echo "pinned nvcc did not install" >&2; exit 1; }
echo "$N/bin/nvcc"
