#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, with a bundle holding
# cuda_backend_bench (scripts/device-bundle.sh --out BUNDLE //bench:cuda_backend_bench ...)
# and bench/decode_profile_summary.py copied into it:
#
#   bash bench/run_decode_profile_device.sh BUNDLE [BATCHES]
#
# For each batch in BATCHES (default "64 1"), context 1,024: cuda_backend_bench
# times the decode step (graph replay through Forward), then runs two more
# steps under Nsight Compute (clocks and caches left alone; one metric, the
# kernel's duration), and decode_profile_summary.py splits the step by
# kernel. The offline workload is cut to a token (it is not measured here).
# Writes $OUT/profile_b<batch>.{csv,txt,log}.
set -uo pipefail
bundle=$1
batches=${2:-64 1}
out=${OUT:-/tmp/decode-profile-out}
mkdir -p "$out"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
[[ -n "$ncu" ]] || { echo "no ncu on this machine" >&2; exit 1; }
steps=2
fail=0
for b in $batches; do
  "$ncu" --profile-from-start off --graph-profiling node --cache-control none \
    --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
    --log-file "$out/profile_b$b.csv" \
    "$bundle/run.sh" cuda_backend_bench --prompts=$b --prompt_len=16 --gen_len=2 --budgets=4096 \
    --tune_prefill=0 --repeats=0 --decode_batch=$b --decode_context=1024 \
    --profile_decode_steps=$steps --json="$out/profile_b$b.json" >"$out/profile_b$b.log" 2>&1 || fail=1
  step_ms=$(python3 -c "import json,sys
for l in open(sys.argv[1]):
  j=json.loads(l)
  if j.get('measure')=='decode_step': print(j['median_gpu_ms'])" "$out/profile_b$b.json")
  python3 "$bundle/decode_profile_summary.py" "$out/profile_b$b.csv" --steps $steps \
    --step_ms "${step_ms:-0}" | tee "$out/profile_b$b.txt" || fail=1
done
exit $fail
