#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, with the bundle made by
#   scripts/device-bundle.sh --out .device-cudabackend //tests/gpu:cuda_backend_test \
#     //engine:backend_factory_test \
#     //tests/gpu:cuda_backend_golden_test //bench:cuda_backend_bench
# plus tools/golden/make_bf16_reference.py, bench/floor.py, bench/floor_report.sh, this script and
# ../shared/bench/hf_baseline.py copied into the bundle:
#
#   bash BUNDLE/run_cuda_backend_device.sh BUNDLE STAGES [bench args...]
#
# STAGES, comma-separated, in this order:
#   tests  the bf16 transformers reference of the golden checkpoints, then
#          every *_test binary of the bundle except those needing several
#          GPUs (tp_*), which read it
#   bench  bench/cuda_backend_bench (ceilings, throughput, decode step,
#          block distance), then bench/floor.py with the ceilings just measured
#   peer   ../shared/bench/hf_baseline.py on the same workload and card
# At most 8 files come back under $OUT: tests.log, bf16ref.tgz, bench.log,
# bench.json, floor.log, peer.log.
set -uo pipefail
bundle=$1
stages=$2
shift 2
out=${OUT:-/tmp/cuda-backend-out}
mkdir -p "$out"
has() { [[ ",$stages," == *",$1,"* ]]; }
{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
    --format=csv
} | tee "$out/bench.log"
fail=0
if has tests; then
  ref=/tmp/bf16ref
  PYTHONUNBUFFERED=1 python3 -W ignore "$bundle/make_bf16_reference.py" --golden tests/data/golden \
    --out "$ref" 2>&1 | tee "$out/tests.log"
  tar czf "$out/bf16ref.tgz" -C "$ref" .
  for t in $(ls "$bundle/bin" | grep -E '_test$' | grep -v '^tp_'); do
    echo "=== $t" | tee -a "$out/tests.log"
    if ! MEMSHARE_BF16_REF_DIR=$ref "$bundle/run.sh" "$t" >>"$out/tests.log" 2>&1; then
      echo "FAILED: $t" | tee -a "$out/tests.log"
      fail=1
    fi
    grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]|^\[==========\]" "$out/tests.log" | tail -n 3
  done
  grep -E "D16|relative L2|MemShare|CUDA vs CPU|dummy weights" "$out/tests.log" | tail -n 30
fi
if has bench; then
  "$bundle/run.sh" cuda_backend_bench --json="$out/bench.json" "$@" 2>&1 | tee -a "$out/bench.log"
  bash "$bundle/floor_report.sh" "$out/bench.json" "$bundle/floor.py" 2>&1 | tee "$out/floor.log"
fi
if has peer; then
  PYTHONUNBUFFERED=1 python3 -W ignore "$bundle/hf_baseline.py" --model r1-distill-qwen-7b \
    --prompts 64 --prompt-len 512 --gen-len 128 --modes static,cb 2>&1 | tee "$out/peer.log"
fi
exit $fail
