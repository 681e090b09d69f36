#!/usr/bin/env bash
# Compile every kernels-cu/cuda/*.cu (shipped) and kernels-cu/dev/*.cu (the dev harness's other versions, with
# their GPU timing main() switched on by -DDEV_MAIN so that its host code is parsed too) to PTX for sm_90a,
# check the PTX ISA is 9.0 (what the H100's CUDA 13.0 driver loads), and assemble each with `ptxas -v` to print registers and spills per kernel.
# Any compile or assembly error fails, and so does any spill or wgmma serialisation notice. Usage: NVCC=/path/to/nvcc scripts/check-kernels.sh
set -euo pipefail
: "${NVCC:?set NVCC to the pinned nvcc (scripts/install-nvcc.sh prints it)}"
PTXAS="$(dirname "$NVCC")/ptxas"
SRC="$(cd "$(dirname "$0")/../kernels-cu/cuda" && pwd)"
DEV="$(cd "$(dirname "$0")/../kernels-cu/dev" && pwd)"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
status=0
for cu in "$SRC"/*.cu "$DEV"/*.cu; do
  name=$(basename "$cu" .cu)
  defs=()
  if [ "$(dirname "$cu")" = "$DEV" ]; then name="dev_$name"; defs=(-DDEV_MAIN); fi
  "$NVCC" --ptx -arch=sm_90a -O3 -std=c++17 --expt-relaxed-constexpr -lineinfo "${defs[@]}" -I"$SRC" "$cu" -o "$OUT/$name.ptx"
  version=$(grep -m1 '^\.version' "$OUT/$name.ptx")
  if [ "$version" != ".version 9.0" ]; then
    echo "FAIL $name: PTX $version (expected .version 9.0: nvcc/nvvm pins are mixed)"; status=1; continue
  fi
  echo "== $name ($version, sm_90a)"
  "$PTXAS" -arch=sm_90a -v "$OUT/$name.ptx" -o "$OUT/$name.cubin" > "$OUT/$name.ptxas" 2>&1 || { cat "$OUT/$name.ptxas"; status=1; continue; }
  awk '/Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); fn = substr($0, RSTART+1, RLENGTH-2) }
           /bytes stack frame/ { frame = $0 }
           /Used [0-9]+ registers/ { sub(/^ptxas info *: */, "", $0); sub(/^ptxas info *: */, "", frame);
                                     printf "   %-32s %s | %s\n", fn, $0, frame }' "$OUT/$name.ptxas"
  # no kernel may spill (registers to local memory), and no wgmma may be serialised by ptxas (it does that
  # where the code touches an in-flight wgmma's registers): either is a failure, named
  if grep -E '[1-9][0-9]* bytes spill (stores|loads)' "$OUT/$name.ptxas" > /dev/null; then
    echo "FAIL $name: ptxas reports spills:"; grep -B2 -E '[1-9][0-9]* bytes spill' "$OUT/$name.ptxas"; status=1
  fi
  if grep -q 'Potential Performance Loss' "$OUT/$name.ptxas"; then
    echo "FAIL $name: ptxas serialises wgmma:"; grep 'Potential Performance Loss' "$OUT/$name.ptxas"; status=1
  fi
done
exit $status
