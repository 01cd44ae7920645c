#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, with the bundle made by
#   scripts/device-bundle.sh --out .device-sk //tests/gpu:gemm_test \
#     //tests/gpu:cuda_backend_test //tests/gpu:attention_test //tests/gpu:norm_test \
#     //tests/gpu:small_kernels_test //bench:kernels_bench //bench:cuda_backend_bench
# plus ../shared/bench/hf_baseline.py, bench/floor.py and bench/floor_report.sh
# copied into it:
#
#   bash bench/run_skinny_gemm_device.sh BUNDLE STAGES
#
# STAGES, comma-separated: tests (every *_test of the bundle), gemm
# (kernels_bench --only gemm: cuBLASLt vs kernels/skinny_gemm at the decode
# shapes), backend (cuda_backend_bench with the skinny GEMM allowed and not,
# alternating: offline throughput and decode step at batch 64 twice each,
# decode step at batches 16 and 1 once each; SKINNY_ORDER and SMALL_BATCHES
# in the environment override "1 0 1 0" and "16 1"), peer (hf_baseline.py on the same workload and
# floor.py with the ceilings cuda_backend_bench measured). Everything lands in
# $OUT/skinny.tgz (one file: the device tool returns at most 8).
set -uo pipefail
bundle=$1
stages=$2
out=${OUT:-/tmp/skinny-out}
dir=$out/skinny
mkdir -p "$dir"
has() { [[ ",$stages," == *",$1,"* ]]; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$dir/gpu.txt"
fail=0
if has tests; then
  for t in $(ls "$bundle/bin" | grep -E '_test$'); do
    if "$bundle/run.sh" "$t" >"$dir/$t.log" 2>&1; then r=passed; else r=FAILED; fail=1; fi
    echo "$t: $r ($(grep -E '^\[  PASSED  \]|^\[  FAILED  \]' "$dir/$t.log" | tr '\n' ' '))" | tee -a "$dir/summary.txt"
  done
  grep -h "skinny GEMMs\|Tune chose" "$dir"/*_test.log | tee -a "$dir/summary.txt"
fi
if has gemm; then
  "$bundle/run.sh" kernels_bench --only gemm --json "$dir/kernels_bench.json" >"$dir/kernels_bench.log" 2>&1
  grep -E "M=(1|8|16|32|48|64) " "$dir/kernels_bench.log" | grep -v heuristic | tee -a "$dir/summary.txt"
fi
if has backend; then
  # The offline workload and the decode step at batch 64 (issue 6's shapes),
  # alternating the skinny GEMM on and off; then decode steps at batches 16
  # and 1 (a token-light throughput run only to satisfy the driver).
  for sk in ${SKINNY_ORDER:-1 0 1 0}; do
    n=$(ls "$dir" | grep -c "backend_skinny${sk}_b64" || true)
    "$bundle/run.sh" cuda_backend_bench --budgets=16384 --tune_prefill=2 --repeats=3 --skinny=$sk \
      --json="$dir/backend_skinny${sk}_b64_r$n.json" >"$dir/backend_skinny${sk}_b64_r$n.log" 2>&1
    echo "b64 skinny=$sk: $(grep -E 'throughput seconds|decode step ms|mean pure decode' "$dir/backend_skinny${sk}_b64_r$n.log" | tr -s ' ' | tr '\n' ';')" | tee -a "$dir/summary.txt"
  done
  for batch in ${SMALL_BATCHES-16 1}; do
    for sk in 1 0; do
      "$bundle/run.sh" cuda_backend_bench --prompts=$batch --prompt_len=64 --gen_len=8 --budgets=2048 \
        --repeats=1 --decode_batch=$batch --skinny=$sk --json="$dir/backend_skinny${sk}_b$batch.json" \
        >"$dir/backend_skinny${sk}_b$batch.log" 2>&1
      echo "b$batch skinny=$sk: $(grep -E 'decode step ms \(batch' "$dir/backend_skinny${sk}_b$batch.log" | tr -s ' ')" | tee -a "$dir/summary.txt"
    done
  done
fi
if has peer; then
  PYTHONUNBUFFERED=1 python3 -W ignore "$bundle/hf_baseline.py" --model r1-distill-qwen-7b --prompts 64 \
    --prompt-len 512 --gen-len 128 --modes static >"$dir/peer.log" 2>&1
  tail -n 5 "$dir/peer.log" | tee -a "$dir/summary.txt"
  bash "$bundle/floor_report.sh" "$dir/backend_skinny1_b64_r0.json" "$bundle/floor.py" >"$dir/floor.log" 2>&1
  tee -a "$dir/summary.txt" <"$dir/floor.log"
fi
tar czf "$out/skinny.tgz" -C "$out" skinny && rm -rf "$dir"
echo "tests: $([[ $fail == 0 ]] && echo all passed || echo SOME FAILED)"
exit $fail
