#!/usr/bin/env bash
# The ONE prepared script for the lent GPU machine: self-test, benchmarks and the torch side-by-side in
# one call. $OUT gets summary.txt, selftest.txt and details.tgz (every log and JSON line); a short table
# prints last.
#
# Build here first (pinned nvcc, see README), then call the device tool with:
#   cp -r ../shared/fixtures .device-fixtures      (once; ../shared does not travel, .device-fixtures is ignored)
#   cp -r ../shared/tokenizers/qwen3 .device-fixtures/tokenizer-qwen3
#   scripts/fetch-trl-wheels.sh                     (once; TRL for the `trl` section, into the ignored .whl/)
#   command: bash scripts/device-check.sh   carry: ["target/release/entrl", ".device-fixtures", ".whl"]   timeout_s: 590
#   (the DAPO runs add up to ~5 min; "kernels" skips the 8B model benches to stay inside one call)
# Usage: [ENTRL_DEADLINE=S] bash scripts/device-check.sh [all|kernels|model]  (two calls fit a 15-minute lease:
#   kernels with ENTRL_DEADLINE=270/timeout_s 290, then model on the still-warm machine). For the select
#   work of issue 4: "selftest,select,ncu" (ENTRL_DEADLINE=270, timeout_s 290), then "sanitize".
set -uo pipefail
PART="${1:-all}"
# Sections: selftest verify attention select loss matmul model8b dapo_nccl dapo; diagnostics: ncu (select
# kernels), sanitize (compute-sanitizer on the select and Hopper attention kernels), decode (launch
# overhead), profile (ENTRL_PROFILE regions of one DAPO step and of the 8B train step with each attention
# version).
# Parts: kernels = selftest..matmul (issues 3, 4); model = model8b dapo_nccl dapo (issues 5, 7, 6);
# all = both; or a comma-separated list of sections.
case "$PART" in
  all) SECTIONS="selftest verify attention select loss matmul model8b rollout trl dapo_nccl dapo" ;;
  kernels) SECTIONS="selftest verify attention select loss matmul" ;;
  model) SECTIONS="model8b rollout trl dapo_nccl dapo" ;;
  *) SECTIONS="${PART//,/ }" ;;
esac
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
# A whole-call deadline (seconds; set it ~20 s under the device call's timeout_s): each section's timeout
# is cut to what is left, sections that cannot start are skipped and named, and the summary and archive
# are always written.
DEADLINE="${ENTRL_DEADLINE:-560}"
START=$SECONDS
# t MAX: the timeout for the next section: MAX, or what is left before the deadline less 15 s for the summary.
t() { local left=$(( DEADLINE - (SECONDS - START) - 15 )); (( left < $1 )) && echo $(( left > 0 ? left : 1 )) || echo "$1"; }
# room N: true when at least N seconds are left for a section; else records the skip.
room() { local left=$(( DEADLINE - (SECONDS - START) - 15 )); (( left >= $1 )) && return 0; echo "skipped (deadline): $2" | tee -a "$D/skipped.txt"; return 1; }
OUT="${OUT:-/tmp/entrl-out}"
mkdir -p "$OUT"
# Details are written to $D and come back as one archive (the device tool returns at most 8 files).
D=/tmp/entrl-details
rm -rf "$D" && mkdir -p "$D"
BIN=target/release/entrl
LIBDIR=/tmp/entrl-libs
mkdir -p "$LIBDIR" && ln -sf /usr/lib/x86_64-linux-gnu/libnccl.so.2 "$LIBDIR/libnccl.so"
export LD_LIBRARY_PATH="$LIBDIR:/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$D/gpu.txt"
"$BIN" info | tee "$D/info.txt"

selftest_rc=0
if want selftest; then
echo "== selftest"
timeout $(t 240) "$BIN" selftest > "$D/selftest.txt" 2>&1  # fixtures: the verify section below
selftest_rc=$?
tail -n 3 "$D/selftest.txt"
fi
# Two shipped attention versions: mma (the default) and the Hopper candidate (selftest rows marked [hopper]
# or [mma], whichever the device does not run); a failing attention row is a failure of the run.
if [ -f "$D/selftest.txt" ] && grep -E '^attention' "$D/selftest.txt" | grep -q 'FAIL'; then
  echo "!! attention rows failed the selftest: the attention timings below are of a wrong kernel" | tee "$D/attn_kernel.txt"
  grep -E '^attention' "$D/selftest.txt" | grep 'FAIL' | head -n 5 | tee -a "$D/attn_kernel.txt"
else
  echo "attention versions: mma (default) and hopper ($(grep -cE '^attention.*\[hopper\]' "$D/selftest.txt" 2>/dev/null || echo 0) hopper rows passed)" > "$D/attn_kernel.txt"
fi

if want verify; then
echo "== verify-reference on the GPU (bf16) against HF's float64 fixtures"
for d in .device-fixtures/*/; do
  [ -f "$d/config.json" ] || continue
  timeout $(t 60) "$BIN" verify-reference "$d" --device cuda > "$D/verify-$(basename "$d").txt" 2>&1
  rc=$?; echo "$(basename "$d"): rc=$rc $(tail -n 1 "$D/verify-$(basename "$d").txt")"
done
echo "== HF transformers' own bf16 error against the same fixtures (what bf16 alone costs)"
args=(); for d in .device-fixtures/*/; do [ -f "$d/config.json" ] && args+=("$d" "$D/verify-$(basename "$d").txt"); done
timeout $(t 90) python3 benches/hf_bf16_fixture_error.py "${args[@]}" > "$D/hf_bf16.jsonl" 2> "$D/hf_bf16.txt"
grep "error ratio" "$D/hf_bf16.txt"
fi

if want attention; then
echo "== bench attention (entrl, then torch SDPA flash/cuDNN + eager entropy)"
if room 40 "bench attention"; then
timeout $(t 180) "$BIN" bench attention --json "$D/attention.jsonl" 2>&1 | tee "$D/attention.txt"
timeout $(t 180) python3 benches/torch_attention.py > "$D/torch_attention.jsonl" 2>&1; tail -n 3 "$D/torch_attention.jsonl"
fi

fi
if want select; then
echo "== bench select (entrl radix select/sort, then torch topk/sort)"
if room 30 "bench select"; then
timeout $(t 60) "$BIN" bench select --wide-sweep --json "$D/select.jsonl" 2>&1 | tee "$D/select.txt"
timeout $(t 60) python3 benches/torch_select.py >> "$D/select.jsonl" 2>&1; tail -n 3 "$D/select.jsonl"
# The same 4M scores as 500 per-sequence pools of 8388-8389 (the strategies' sequence scope; most pools start
# at an offset that is not a multiple of 4, as real sequences do).
timeout $(t 40) "$BIN" bench select --pools 500 --reps 20 --wide-sweep --json "$D/select_pools.jsonl" 2>&1 | tee "$D/select_pools.txt"
fi

fi
if want ncu; then
echo "== ncu: per-kernel times of select_tails calls (wide version first) and a radix sort (bench select, 1 rep)"
ENTRL_SELECT_HIST=wide timeout $(t 90) ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw -c 60 \
  -k regex:"select_|radix_sort" "$BIN" bench select --reps 1 > "$D/ncu_select.csv" 2> "$D/ncu_select.err"
echo "ncu rc=$?"
python3 - "$D/ncu_select.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
if len(rows) > 2:
    h = rows[0]
    k, g, t = h.index("Kernel Name"), h.index("Grid Size"), h.index("gpu__time_duration.sum")
    print(f"unit: {rows[1][t]}")
    for r in rows[2:]:
        print(f"{r[k][:28]:<28} grid {r[g]:<16} {r[t]}")
PY
# Throughput and stall reasons (kernel:launches to skip): pass 1 of the plain version (a third of the bytes'
# speed on 2026-11-27), and the wide version's passes 0 and 1 over the data, pass 2 over the candidates and
# the candidates' mask.
for ks in select_hist_plain:1 select_wide_data:0 select_wide_data:1 select_wide_cand:0 select_wide_cand_mask:0; do
  k=${ks%:*}; skip=${ks#*:}
  echo "-- $k (launch $skip)"
  ENTRL_SELECT_HIST=wide timeout $(t 60) ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section Occupancy \
    -k "$k" --launch-skip "$skip" -c 1 "$BIN" bench select --reps 1 > "$D/ncu_${k}_$skip.txt" 2>&1
  grep -E "Duration|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Stall|stall" "$D/ncu_${k}_$skip.txt" | head -12
done
fi
if want sanitize && room 40 "compute-sanitizer"; then
# Out-of-bounds accesses, shared-memory races and barrier misuse in the select and sort kernels (every
# version: bench select runs them all), on 300,001 scores in one pool and in 37 pools (mostly unaligned),
# and in the Hopper attention kernels.
echo "== compute-sanitizer: memcheck, racecheck, synccheck on bench select"
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda-13.0/bin/compute-sanitizer)
for tool in memcheck racecheck synccheck; do
  for p in 1 37; do
    ENTRL_SELECT_HIST=wide timeout $(t 60) "$SAN" --tool "$tool" --error-exitcode 9 \
      "$BIN" bench select --n 300001 --pools "$p" --reps 1 > "$D/sanitize_${tool}_$p.txt" 2>&1
    echo "$tool, $p pool(s): rc=$? $(grep -m1 'ERROR SUMMARY' "$D/sanitize_${tool}_$p.txt")" | tee -a "$D/sanitize.txt"
  done
  # the Hopper attention forward and backward (TMA, mbarriers, named barriers) on a small pack with an empty,
  # a one-token and odd-length sequences (racecheck sees the generic shared-memory accesses, not the async
  # proxy's)
  ENTRL_ATTENTION=hopper timeout $(t 60) "$SAN" --tool "$tool" --error-exitcode 9 \
    "$BIN" bench attention --lens 300,129,0,1 --heads 4 --kv-heads 2 --reps 1 > "$D/sanitize_${tool}_attn.txt" 2>&1
  echo "$tool, hopper attention: rc=$? $(grep -m1 'ERROR SUMMARY' "$D/sanitize_${tool}_attn.txt")" | tee -a "$D/sanitize.txt"
done
fi
if want loss; then
echo "== bench loss (entrl fused LM head + DAPO loss, then torch eager)"
if room 40 "bench loss"; then
timeout $(t 90) "$BIN" bench loss --json "$D/loss.jsonl" 2>&1 | tee "$D/loss.txt"
timeout $(t 90) python3 benches/torch_loss.py >> "$D/loss.jsonl" 2>&1; tail -n 1 "$D/loss.jsonl"
fi

fi
if want matmul; then
echo "== bench matmul (entrl, then torch, same GPU, same call)"
if room 30 "bench matmul"; then
timeout $(t 60) "$BIN" bench matmul --json "$D/bench.jsonl" 2>&1 | tee -a "$D/bench.txt"
ENTRL_GEMM=lt timeout $(t 60) "$BIN" bench matmul 2>&1 | sed 's/^/[cuBLASLt] /' | tee -a "$D/bench.txt"
timeout $(t 60) python3 benches/torch_matmul.py > "$D/torch.jsonl" 2>&1; cat "$D/torch.jsonl"
fi
fi

if want model8b && room 60 "qwen3-8b benches"; then
echo "== qwen3-8b shape: train step and generation (entrl, then HF transformers)"
  timeout $(t 150) "$BIN" bench train-step --json "$D/train.jsonl" 2>&1 | tee "$D/train.txt"
  # the same step with the Hopper attention kernels (issue 19's training-step target)
  ENTRL_ATTENTION=hopper timeout $(t 150) "$BIN" bench train-step --json "$D/train_hopper.jsonl" 2>&1 | tee "$D/train_hopper.txt"
  # and with bf16 gradient storage (train.grad_dtype = bf16): issue 19's peak-memory target
  ENTRL_ATTENTION=hopper timeout $(t 150) "$BIN" bench train-step --grad-dtype bf16 --json "$D/train_bf16.jsonl" 2>&1 | tee "$D/train_bf16.txt"
  timeout $(t 150) "$BIN" bench generate --json "$D/generate.jsonl" 2>&1 | tee "$D/generate.txt"
  timeout $(t 240) python3 benches/torch_model.py > "$D/torch_model.jsonl" 2>&1; tail -n 2 "$D/torch_model.jsonl"
fi

if want rollout && room 90 "rollout workload"; then
# Issue 16's workload (256 prompts × 512 tokens × 4 samples, mean 2000, max 8192) takes minutes per path on
# the 8B shape; the quick default keeps the shape and the long tail at an eighth of the requests.
echo "== rollout workload, qwen3-8b shape: paged KV cache vs contiguous slots (same call)"
# quick: 8 prompts × 16 samples (DAPO's group size, so prefix groups of 16), paged eager / graph, each
# with and without prefix attention, then contiguous slots
if [ "${ENTRL_ROLLOUT:-quick}" = full ]; then RARGS=""; else RARGS="--prompts 8 --samples 16 --max-response 4096 --mean-response 1000"; fi
timeout $(t 480) "$BIN" bench rollout $RARGS --json "$D/rollout.jsonl" 2>&1 | tee "$D/rollout.txt"
fi

python3 - > "$D/dapo_prompts.jsonl" <<'PY'
import json
for a in range(8):
    for b in range(8):
        msg = [{"role": "user", "content": f"What is {a} + {b}? Put the final answer in \\boxed{{}}."}]
        print(json.dumps({"prompt": msg, "reward_model": {"ground_truth": str(a + b)}, "data_source": "math_dapo"}))
PY
if want trl && room 60 "DAPO vs TRL"; then
# TRL's anchor shape (benches/trl_dapo.py: qwen3-0.6b, 4 prompts × 16 completions × 512 tokens, 4 steps);
# TRL needs the wheels of scripts/fetch-trl-wheels.sh (carry ".whl").
echo "== DAPO step at TRL's anchor shape: entrl, then TRL GRPOTrainer(loss_type=dapo) in the same call"
timeout $(t 150) "$BIN" train preset=dapo model.path=random:qwen3-0.6b model.tokenizer=.device-fixtures/tokenizer-qwen3 \
  data.train="$D/dapo_prompts.jsonl" rollout.n=16 train.batch_size=4 train.mini_batch_size=4 rollout.max_response_len=512 \
  rollout.dynamic_sampling=false reward.overlong_penalty=false train.steps=4 train.warmup_steps=0 \
  run.out_dir=/tmp/entrl-trl-shape run.save_final=false run.plot=false run.progress=false > "$D/trl_entrl.txt" 2>&1
echo "entrl at TRL's shape rc=$?"; tail -n 2 "$D/trl_entrl.txt"
cp /tmp/entrl-trl-shape/metrics.jsonl "$D/trl_entrl_metrics.jsonl" 2>/dev/null
if ls .whl/trl-*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && OUT="$D" PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 timeout $(t 240) python3 benches/trl_dapo.py > "$D/trl.txt" 2>&1
  echo "trl rc=$?"; tail -n 6 "$D/trl.txt"
else
  echo "trl: no .whl/trl-*.whl (run scripts/fetch-trl-wheels.sh here and carry .whl)"
fi
fi
if want dapo_nccl && room 30 "DAPO through NCCL"; then
echo "== DAPO, 1 step on the qwen3-0.6b shape, world size 1 through NCCL (sharded optimizer path)"
timeout $(t 120) "$BIN" train preset=dapo model.path=random:qwen3-0.6b model.tokenizer=.device-fixtures/tokenizer-qwen3 \
  data.train="$D/dapo_prompts.jsonl" rollout.n=4 train.batch_size=8 train.mini_batch_size=4 rollout.max_response_len=128 \
  rollout.dynamic_sampling=false reward.overlong_penalty=false train.steps=1 run.world_size=1 run.comm=nccl \
  run.out_dir=/tmp/entrl-dapo-nccl run.save_final=false run.plot=false run.progress=false > "$D/dapo_nccl.txt" 2>&1
nccl_rc=$?; echo "dapo nccl rc=$nccl_rc"; tail -n 2 "$D/dapo_nccl.txt"
echo "$nccl_rc" > "$D/dapo_nccl.rc"
fi

if want dapo && room 40 "DAPO qwen3-0.6b"; then
echo "== DAPO steps on the qwen3-0.6b shape (random weights, real Qwen3 tokenizer): timings per phase"
timeout $(t 200) "$BIN" train preset=dapo model.path=random:qwen3-0.6b model.tokenizer=.device-fixtures/tokenizer-qwen3 \
  data.train="$D/dapo_prompts.jsonl" rollout.n=8 train.batch_size=16 train.mini_batch_size=4 rollout.max_response_len=512 \
  rollout.dynamic_sampling=false reward.overlong_penalty=false train.steps=3 train.warmup_steps=0 \
  tokens.strategy=anchors:0.2 run.diagnose_every=1 run.out_dir=/tmp/entrl-dapo run.save_final=false run.plot=false \
  run.progress=false > "$D/dapo.txt" 2>&1
echo "dapo rc=$?"; tail -n 4 "$D/dapo.txt"
cp /tmp/entrl-dapo/metrics.jsonl "$D/dapo_metrics.jsonl" 2>/dev/null
fi
if want decode && room 30 "decode profile"; then
echo "== decode on qwen3-0.6b, batch 32: host-only vs synchronised region times (launch-bound when they match)"
for mode in host 1; do
  ENTRL_PROFILE=$mode timeout $(t 60) "$BIN" bench generate --shape qwen3-0.6b --batches 32 --prompt 128 --new 128 \
    > "$D/decode_profile_$mode.txt" 2>&1
  echo "ENTRL_PROFILE=$mode rc=$?"; grep -E "batch +[0-9]+:|generate:|decode:|cuda:|region" "$D/decode_profile_$mode.txt"
done
echo "-- the same through cuBLASLt with cached plans (ENTRL_GEMM=lt; the selftest's [lt] rows check it)"
ENTRL_GEMM=lt ENTRL_PROFILE=host timeout $(t 60) "$BIN" bench generate --shape qwen3-0.6b --batches 32 --prompt 128 \
  --new 128 > "$D/decode_profile_lt.txt" 2>&1
echo "ENTRL_GEMM=lt rc=$?"; grep -E "batch +[0-9]+:|generate: decode|cuda:" "$D/decode_profile_lt.txt"
fi
if want profile && room 40 "DAPO profile"; then
echo "== ENTRL_PROFILE=1: where one DAPO step on qwen3-0.6b spends its time (synchronised regions)"
ENTRL_PROFILE=1 timeout $(t 120) "$BIN" train preset=dapo model.path=random:qwen3-0.6b model.tokenizer=.device-fixtures/tokenizer-qwen3 \
  data.train="$D/dapo_prompts.jsonl" rollout.n=8 train.batch_size=16 train.mini_batch_size=4 rollout.max_response_len=512 \
  rollout.dynamic_sampling=false reward.overlong_penalty=false train.steps=1 train.warmup_steps=0 \
  tokens.strategy=anchors:0.2 run.diagnose_every=1 run.out_dir=/tmp/entrl-dapo-prof run.save_final=false run.plot=false \
  run.progress=false > "$D/dapo_profile.txt" 2>&1
echo "dapo profile rc=$?"; grep -A 24 "ENTRL_PROFILE" "$D/dapo_profile.txt" | head -26
# Issue 19: every non-GEMM millisecond of the qwen3-8b train step (8192 tokens), with each attention version
for a in mma hopper; do
  room 60 "train-step profile $a" || break
  ENTRL_ATTENTION=$a ENTRL_PROFILE=1 timeout $(t 150) "$BIN" bench train-step --reps 2 > "$D/train_profile_$a.txt" 2>&1
  echo "train-step profile ($a) rc=$?"; grep -A 40 "ENTRL_PROFILE" "$D/train_profile_$a.txt" | head -42
done
fi

python3 - "$D" "$selftest_rc" <<'PY' | tee "$D/summary.txt"
import json, sys, pathlib
out, rc = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def load(p):
    try:
        return json.loads((out / p).read_text().strip().splitlines()[-1])
    except Exception as e:
        return {"error": str(e)}
ours, torch = load("bench.jsonl"), load("torch.jsonl")
try:
    lines = [l for l in (out / "selftest.txt").read_text().splitlines() if " passed, " in l]
    st = f"{'PASS' if rc == 0 else 'FAIL rc=%d' % rc} ({lines[-1] if lines else 'no summary'})"
except Exception:
    st = "not run in this part"
print("\n| check | result |\n|---|---|")
print(f"| selftest | {st} |")
try:
    print(f"| skipped for the deadline | {'; '.join((out / 'skipped.txt').read_text().split(chr(10))).strip('; ')} |")
except Exception:
    pass
try:
    print(f"| attention kernels used below | {(out / 'attn_kernel.txt').read_text().strip()} |")
except Exception:
    pass
try:
    print(f"| compute-sanitizer on the select and Hopper attention kernels | {'; '.join(l for l in (out / 'sanitize.txt').read_text().split(chr(10)) if l)} |")
except Exception:
    pass
if "tflops" in ours and "tflops" in torch:
    print(f"| bf16 8192^3 matmul, entrl | {ours['ms']:.3f} ms, {ours['tflops']:.1f} TFLOP/s |")
    print(f"| bf16 8192^3 matmul, torch {torch.get('torch','')} | {torch['ms']:.3f} ms, {torch['tflops']:.1f} TFLOP/s |")
    print(f"| ratio entrl / torch | {ours['tflops'] / torch['tflops']:.3f} |")
else:
    print(f"| matmul | entrl: {ours} torch: {torch} |")

def lines(p):
    try:
        return [json.loads(l) for l in (out / p).read_text().splitlines() if l.startswith("{")]
    except Exception:
        return []
# entrl's rows by forward: "entrl" (attention_mma.cu) and "entrl_hopper" (attention_hopper.cu)
def impl_of(r):
    k = r.get("kernel", "mma")
    return r["impl"] + ("" if r["impl"] != "entrl" or k == "mma" else "_" + k)
att = {(impl_of(r), r["shape"], r["mode"]): r for r in lines("attention.jsonl") + lines("torch_attention.jsonl") if "ms" in r}
sel = {r["impl"]: r for r in lines("select.jsonl") if "ms" in r and "impl" in r}
def wide_sweep(p, label):
    # bench select --wide-sweep: the wide version by (tile, candidate split, pass-0 copies), masks checked.
    sw = sorted((r for r in lines(p) if r.get("bench") == "select_wide_sweep"), key=lambda r: r["ms"])
    if sw:
        ok = sum(1 for r in sw if r["ok"])
        print(f"| wide shapes, {label}, fastest 4 (tile/split/copies: us) | "
              + ", ".join(f"{r['tile']}/{r['split']}/{int(r['copies'])}: {r['ms'] * 1e3:.1f}" for r in sw[:4])
              + f" | masks ok for {ok}/{len(sw)} shapes |")
# Every select version and sort scatter ("entrl_select_tails" is the process default, plain unless
# ENTRL_SELECT_HIST says otherwise), fastest first.
sel_versions = {k: v["ms"] for k, v in sel.items() if k.startswith("entrl_select_tails")}
best_sel = min(sel_versions, key=sel_versions.get) if sel_versions else None
if best_sel:
    ours = sel_versions[best_sel]
    both = sel.get("torch_topk_both", {}).get("ms")
    srt = sel.get("torch_sort", {}).get("ms")
    print(f"\n| select top+bottom 20% of 4,194,304 | entrl {ours * 1e3:.1f} us ({best_sel}) | torch 2x topk {both} ms | torch sort {srt} ms | "
          f"speed-up vs 2x topk {both / ours if both else float('nan'):.1f}x |")
    print("| select versions (us) | " + ", ".join(f"{k.replace('entrl_select_tails', 'default') if k == 'entrl_select_tails' else k[len('entrl_select_tails_'):]} {v * 1e3:.1f}" for k, v in sorted(sel_versions.items(), key=lambda kv: kv[1])) + " |")
    pooled = {r.get("impl"): r["ms"] for r in lines("select_pools.jsonl") if "ms" in r and r.get("impl", "").startswith("entrl_select_tails")}
    if pooled:
        print("| select versions, 500 pools of ~8389 (us) | " + ", ".join(f"{k[len('entrl_select_tails'):].lstrip('_') or 'default'} {v * 1e3:.1f}" for k, v in sorted(pooled.items(), key=lambda kv: kv[1])) + " |")
    wide_sweep("select.jsonl", "1 pool")
    wide_sweep("select_pools.jsonl", "500 pools")
    sorts = {k: v["ms"] for k, v in sel.items() if k.startswith("entrl_radix_sort")}
    print("| radix sort 4M (us) | " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in sorted(sorts.items(), key=lambda kv: kv[1])) + f" | torch sort {srt} ms |")
loss = {r.get("impl"): r for r in lines("loss.jsonl")}
if "entrl" in loss and "torch_eager" in loss:
    e, t = loss["entrl"], loss["torch_eager"]
    print(f"\n| loss T=8192 H=4096 V=151936 | entrl {e['ms']:.1f} ms, +{e['extra_gib']:.2f} GiB (dW f32 {e['dw_gib']:.2f}) "
          f"| torch eager {t['ms']:.1f} ms, +{t['extra_gib']:.2f} GiB | speed ratio {t['ms'] / e['ms']:.2f}x |")
tr = {r.get("impl"): r for r in lines("train.jsonl") + lines("torch_model.jsonl") if r.get("bench") == "train_step"}
if "entrl" in tr and "hf_sdpa_ckpt" in tr:
    e, t = tr["entrl"], tr["hf_sdpa_ckpt"]
    print(f"\n| qwen3-8b train step 8192 tok | entrl {e['tok_per_s']:.0f} tok/s, {e['peak_gib']:.1f} GiB | HF {t['tok_per_s']:.0f} tok/s, {t['peak_gib']:.1f} GiB | ratio {e['tok_per_s'] / t['tok_per_s']:.2f}x |")
trh = {r.get("impl"): r for r in lines("train_hopper.jsonl") if r.get("bench") == "train_step"}
trb = {r.get("impl"): r for r in lines("train_bf16.jsonl") if r.get("bench") == "train_step"}
if "entrl" in trh and "hf_sdpa_ckpt" in tr:
    e, t = trh["entrl"], tr["hf_sdpa_ckpt"]
    print(f"| qwen3-8b train step 8192 tok, hopper attention | entrl {e['tok_per_s']:.0f} tok/s, {e['peak_gib']:.1f} GiB | HF {t['tok_per_s']:.0f} tok/s, {t['peak_gib']:.1f} GiB | ratio {e['tok_per_s'] / t['tok_per_s']:.2f}x |")
if "entrl" in trb and "hf_sdpa_ckpt" in tr:
    e, t = trb["entrl"], tr["hf_sdpa_ckpt"]
    print(f"| qwen3-8b train step 8192 tok, hopper attention, bf16 gradients | entrl {e['tok_per_s']:.0f} tok/s, {e['peak_gib']:.1f} GiB | HF {t['tok_per_s']:.0f} tok/s, {t['peak_gib']:.1f} GiB | ratio {e['tok_per_s'] / t['tok_per_s']:.2f}x |")
gen = [r for r in lines("generate.jsonl") if str(r.get("impl", "")).startswith("entrl")]
hf = [r for r in lines("torch_model.jsonl") if r.get("impl") == "hf_generate"]
for r in gen:
    ratio = f"{r['tok_per_s'] / hf[0]['tok_per_s']:.1f}x HF" if hf and r["batch"] == 16 else ""
    floor = f"{r['step_ms']:.2f} ms/step = {r['step_ms'] / r['floor_ms']:.2f}x the {r['floor_ms']:.2f} ms weight-read floor ({r['copy_gb_per_s']:.0f} GB/s)" if "floor_ms" in r else ""
    print(f"| generate {r['impl']} batch {r['batch']} | {r['tok_per_s']:.0f} tok/s overall, decode {r['decode_tok_per_s']:.0f}, prefill {r['prefill_tok_per_s']:.0f}; {floor} | {ratio} |")
ro = {r.get("impl"): r for r in lines("rollout.jsonl")}
for k, r in ro.items():
    print(f"| rollout {r['prompts']}x{r['samples']} prompts of {r['prompt_len']}, {k} | {r['tok_per_s']:.0f} tok/s, {r['seconds']:.1f} s, "
          f"peak {r['peak_gib']:.1f} GiB, running <= {r['peak_running']}, preemptions {r['preemptions']} |")
te = [m for m in lines("trl_entrl_metrics.jsonl") if "time_step_s" in m]
trl = json.loads((out / "trl.json").read_text()) if (out / "trl.json").exists() else None
e_steady = sorted(m["time_step_s"] for m in te[1:])[len(te[1:]) // 2] if len(te) > 1 else None
if te:
    steps = ", ".join("%.2f" % m["time_step_s"] for m in te)
    trl_steps = trl["step_s"] if trl else "not run"
    ratio = "%.1fx faster" % (trl["steady_step_s"] / e_steady) if trl and e_steady else ""
    print(f"| DAPO at TRL's shape (qwen3-0.6b, 4 x 16 x 512) | entrl steps {steps} s | TRL {trl_steps} s | {ratio} |")
dl = lines("dapo_metrics.jsonl")
for m in dl:
    print(f"| DAPO qwen3-0.6b step {m['step']} (16 prompts x 8, <=512 new) | rollout {m['time_rollout_s']:.2f} s, old-logprob "
          f"{m['time_old_logprob_s']:.2f} s, update {m['time_update_s']:.2f} s, total {m['time_step_s']:.2f} s, "
          f"{m['tokens_per_s']:.0f} tok/s, len {m['response_len_mean']:.0f} |")
if not dl:
    print("| DAPO qwen3-0.6b | no metrics (see dapo.txt) |")
try:
    nrc = (out / "dapo_nccl.rc").read_text().strip()
except Exception:
    nrc = "not run"
print(f"| DAPO qwen3-0.6b, world size 1 through NCCL (ZeRO-2 path) | rc={nrc} (dapo_nccl.txt) |")
print("\n| attention forward, shape | entrl fwd | fwd+H (TF/s) | H overhead | vs FA2 fwd | vs cuDNN fwd | vs eager H | fwd+bwd (TF/s) | vs FA2 fwd+bwd | vs cuDNN fwd+bwd | every online stat / fwd+H | hmix pass / fwd |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for impl in ["entrl", "entrl_hopper"]:
  for shape in ["S=1024", "S=2048", "S=4096", "S=8192", "8x1024"]:
    g = lambda i, m: att.get((i, shape, m))
    f, fh, fb = g(impl, "fwd"), g(impl, "fwd_entropy"), g(impl, "fwd_bwd")
    fa, fab, eager = g("torch_flash", "fwd"), g("torch_flash", "fwd_bwd"), g("torch_eager_entropy", "fwd_entropy")
    cu, cub = g("torch_cudnn", "fwd"), g("torch_cudnn", "fwd_bwd")
    name = "mma" if impl == "entrl" else "hopper"
    if not (f and fh and fb):
        print(f"| {name} {shape} | missing | | | | | | | | | | |"); continue
    fs, fhm = g(impl, "fwd_stats"), g(impl, "fwd_entropy_hmix")
    stats_cell = f"{fs['ms'] / fh['ms']:.3f}x" if fs else "-"
    hmix_cell = f"{(fhm['ms'] - fh['ms']) / f['ms']:.2f}x" if fhm else "-"
    r = lambda a, b: f"{a['tflops'] / b['tflops']:.2f}x" if a and b else "-"
    sp = lambda a, b: f"{b['ms'] / a['ms']:.1f}x faster" if a and b else "-"
    print(f"| {name} {shape} | {f['ms']:.3f} ms ({f['tflops']:.0f}) | {fh['ms']:.3f} ms ({fh['tflops']:.0f}) | {100 * (fh['ms'] / f['ms'] - 1):+.1f}% "
          f"| {r(fh, fa)} | {r(fh, cu)} | {sp(fh, eager)} | {fb['ms']:.3f} ms ({fb['tflops']:.0f}) | {r(fb, fab)} | {r(fb, cub)} | {stats_cell} | {hmix_cell} |")

# The issues' first targets, checked against what this call measured (PASS / MISS / not measured).
def verdict(ok):
    return "not measured" if ok is None else ("PASS" if ok else "MISS")
def get(d, *keys):
    try:
        for k in keys:
            d = d[k]
        return d
    except Exception:
        return None
fh8, f8, fa8, eager8 = att.get(("entrl", "S=8192", "fwd_entropy")), att.get(("entrl", "S=8192", "fwd")), \
    att.get(("torch_flash", "S=8192", "fwd")), att.get(("torch_eager_entropy", "S=8192", "fwd_entropy"))
t = []
t.append(("3: fwd+H at S=8192 >= 0.6x torch FA2 fwd", None if not (fh8 and fa8) else fh8["tflops"] >= 0.6 * fa8["tflops"]))
t.append(("3: fwd+H at S=8192 >= 30x faster than eager entropy", None if not (fh8 and eager8) else eager8["ms"] >= 30 * fh8["ms"]))
t.append(("3: entropy adds <= 5% to the forward (S=8192)", None if not (fh8 and f8) else fh8["ms"] <= 1.05 * f8["ms"]))
hm8, fs8 = att.get(("entrl", "S=8192", "fwd_entropy_hmix")), att.get(("entrl", "S=8192", "fwd_stats"))
t.append(("18: the head-mixture pass <= 1.0x the forward (S=8192)", None if not (hm8 and fh8 and f8) else hm8["ms"] - fh8["ms"] <= f8["ms"]))
t.append(("18: every online statistic adds <= 5% to fwd+H (S=8192)", None if not (fs8 and fh8) else fs8["ms"] <= 1.05 * fh8["ms"]))
hf8, hh8, hb8 = att.get(("entrl_hopper", "S=8192", "fwd")), att.get(("entrl_hopper", "S=8192", "fwd_entropy")), \
    att.get(("entrl_hopper", "S=8192", "fwd_bwd"))
cu8, fab8, cub8 = att.get(("torch_cudnn", "S=8192", "fwd")), att.get(("torch_flash", "S=8192", "fwd_bwd")), \
    att.get(("torch_cudnn", "S=8192", "fwd_bwd"))
t.append(("19: hopper fwd+H >= 1.0x SDPA-flash fwd (S=8192)", None if not (hh8 and fa8) else hh8["tflops"] >= fa8["tflops"]))
t.append(("19: hopper fwd+H >= 0.8x cuDNN fwd (S=8192)", None if not (hh8 and cu8) else hh8["tflops"] >= 0.8 * cu8["tflops"]))
t.append(("19: hopper fwd+bwd >= 1.0x SDPA-flash fwd+bwd (S=8192)", None if not (hb8 and fab8) else hb8["tflops"] >= fab8["tflops"]))
t.append(("19: entropy adds <= 3% to the hopper forward (S=8192)", None if not (hh8 and hf8) else hh8["ms"] <= 1.03 * hf8["ms"]))
t.append(("19: hopper forward faster than mma (S=8192, fwd+H): make it the default", None if not (hh8 and fh8) else hh8["ms"] < fh8["ms"]))
best_train = max((r for r in [tr.get("entrl"), trh.get("entrl"), trb.get("entrl")] if r), key=lambda r: r["tok_per_s"], default=None)
hf_train = tr.get("hf_sdpa_ckpt")
t.append(("19: qwen3-8b train step >= 1.0x HF + SDPA (faster attention version)", None if not (best_train and hf_train) else best_train["tok_per_s"] >= hf_train["tok_per_s"]))
lowest = min((r for r in [tr.get("entrl"), trh.get("entrl"), trb.get("entrl")] if r), key=lambda r: r["peak_gib"], default=None)
t.append(("19: qwen3-8b train step peak <= HF's + 15% (lowest-memory run)", None if not (lowest and hf_train) else lowest["peak_gib"] <= 1.15 * hf_train["peak_gib"]))
# The target is judged on the process default (what training runs); if another version is faster, the fix is
# to make it the default (cuda/select.rs), not to read this row off the fastest one.
sel_ours, sel_both = get(sel, "entrl_select_tails", "ms"), get(sel, "torch_topk_both", "ms")
t.append(("4: select top+bottom 20% of 4M >= 4x faster than 2x topk (default version)", None if sel_ours is None or sel_both is None else sel_both >= 4 * sel_ours))
le, lt = loss.get("entrl"), loss.get("torch_eager")
t.append(("4: fused loss no slower than torch eager", None if not (le and lt) else le["ms"] <= lt["ms"]))
t.append(("4: fused loss <= 2 GiB extra (besides the f32 LM-head gradient)", None if not le else le["extra_gib"] - le["dw_gib"] <= 2.0))
# the faster decode mode at batch 16 (graph once it runs; eager otherwise)
g16 = min((r for r in gen if r.get("batch") == 16), key=lambda r: r["step_ms"], default=None)
t.append(("5: decode at batch 16 >= 5x HF generate", None if not (g16 and hf) else g16["tok_per_s"] >= 5 * hf[0]["tok_per_s"]))
rp = max((r for k, r in ro.items() if k.startswith("entrl-paged")), key=lambda r: r["tok_per_s"], default=None)
rc_ = ro.get("entrl-contiguous")
t.append(("16: rollout workload paged >= 3x contiguous slots", None if not (rp and rc_) else rp["tok_per_s"] >= 3 * rc_["tok_per_s"]))
t.append(("16: rollout >= 5000 generated tok/s (8B shape)", None if not rp else rp["tok_per_s"] >= 5000))
t.append(("16: decode step at batch 16 <= 1.25x the weight-read floor", None if not (g16 and "floor_ms" in g16) else g16["step_ms"] <= 1.25 * g16["floor_ms"]))
t.append(("16: DAPO step at TRL's shape >= 5x faster than TRL", None if not (trl and e_steady) else trl["steady_step_s"] >= 5 * e_steady))
t.append(("6: DAPO steps on qwen3-0.6b ran", None if not dl else True))
t.append(("7: world size 1 through NCCL ran DAPO steps", None if nrc == "not run" else nrc == "0"))
print("\n| issue target | verdict |\n|---|---|")
for name, ok in t:
    print(f"| {name} | {verdict(ok)} |")
PY
cp "$D/summary.txt" "$OUT/" 2>/dev/null; cp "$D/selftest.txt" "$OUT/" 2>/dev/null
tar czf "$OUT/details.tgz" -C "$D" .
exit $selftest_rc
