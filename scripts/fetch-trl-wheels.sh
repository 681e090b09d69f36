#!/usr/bin/env bash
# Wheels for the device script's `trl` section (TRL's GRPOTrainer with loss_type=dapo, the anchor of
# benches/trl_dapo.py): the packages the lent H200 lacks, for its Python 3.12, into .whl/ (ignored by git).
# Carry ".whl" in the device call; the section installs them into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
mkdir -p .whl
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat+=(--platform "$p")
done
for w in trl==1.16.0 datasets==4.7.0 dill==0.4.0 multiprocess==0.70.18; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d .whl "$w"
done
ls -la .whl
