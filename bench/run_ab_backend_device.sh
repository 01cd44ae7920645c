#!/usr/bin/env bash
# A/B of two builds of the CUDA backend on the GPU machine, in one call:
# the baseline bundle (cuda_backend_bench of the commit before a change)
# and the candidate bundle (the change, with its GPU tests), both made with
# scripts/device-bundle.sh, run from the repository root:
#
#   bash bench/run_ab_backend_device.sh BASE NEW STAGES
#
# STAGES, comma-separated:
#   tests    every *_test binary of NEW
#   backend  cuda_backend_bench alternating BASE, NEW, BASE, NEW (override
#            with AB_ORDER="base new ..."): offline 64 x 512 -> 128 and the
#            decode step at batch 64, context 1,024; then the decode step at
#            the batches of AB_SMALL_BATCHES (default "16 1"), once each
#   peer     ../shared/bench/hf_baseline.py (copied into NEW) on the same
#            workload, and floor.py with NEW's first ceilings
# Everything lands in $OUT/ab.tgz; the summary is printed.
set -uo pipefail
base=$1
new=$2
stages=$3
out=${OUT:-/tmp/ab-out}
dir=$out/ab
mkdir -p "$dir"
has() { [[ ",$stages," == *",$1,"* ]]; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$dir/gpu.txt"
fail=0
if has tests; then
  for t in $(ls "$new/bin" | grep -E '_test$' | grep -v '^tp_'); do
    if "$new/run.sh" "$t" >"$dir/$t.log" 2>&1; then r=passed; else r=FAILED; fail=1; fi
    echo "$t: $r ($(grep -E '^\[  PASSED  \]|^\[  FAILED  \]' "$dir/$t.log" | tr '\n' ' '))" |
      tee -a "$dir/summary.txt"
  done
fi
if has backend; then
  for which in ${AB_ORDER:-base new base new}; do
    [[ $which == base ]] && bundle=$base || bundle=$new
    n=$(ls "$dir" | grep -c "backend_${which}_b64" || true)
    "$bundle/run.sh" cuda_backend_bench --budgets=16384 --tune_prefill=2 --repeats=3 \
      --json="$dir/backend_${which}_b64_r$n.json" >"$dir/backend_${which}_b64_r$n.log" 2>&1 || fail=1
    echo "b64 $which: $(grep -E 'throughput seconds|decode step ms|mean pure decode' \
      "$dir/backend_${which}_b64_r$n.log" | tr -s ' ' | tr '\n' ';')" | tee -a "$dir/summary.txt"
  done
  for batch in ${AB_SMALL_BATCHES-16 1}; do
    for which in base new; do
      [[ $which == base ]] && bundle=$base || bundle=$new
      "$bundle/run.sh" cuda_backend_bench --prompts=$batch --prompt_len=64 --gen_len=8 \
        --budgets=2048 --repeats=1 --decode_batch=$batch \
        --json="$dir/backend_${which}_b$batch.json" >"$dir/backend_${which}_b$batch.log" 2>&1 || fail=1
      echo "b$batch $which: $(grep -E 'decode step ms \(batch' "$dir/backend_${which}_b$batch.log" |
        tr -s ' ')" | tee -a "$dir/summary.txt"
    done
  done
fi
if has peer; then
  PYTHONUNBUFFERED=1 python3 -W ignore "$new/hf_baseline.py" --model r1-distill-qwen-7b --prompts 64 \
    --prompt-len 512 --gen-len 128 --modes static >"$dir/peer.log" 2>&1 || fail=1
  tail -n 5 "$dir/peer.log" | tee -a "$dir/summary.txt"
  bash "$new/floor_report.sh" "$dir/backend_new_b64_r0.json" "$new/floor.py" >"$dir/floor.log" 2>&1
  tee -a "$dir/summary.txt" <"$dir/floor.log"
fi
tar czf "$out/ab.tgz" -C "$out" ab && rm -rf "$dir"
echo "tests: $([[ $fail == 0 ]] && echo all passed || echo SOME FAILED)"
exit $fail
