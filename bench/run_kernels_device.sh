#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, with the bundle made by
#   scripts/device-bundle.sh --out .device-cudakernels //tests/gpu:... //bench:kernels_bench
# and ../shared/bench/torch_kernels_baseline.py and bench/torch_peer_kernels.py
# copied into the bundle:
#   bench/run_kernels_device.sh [BUNDLE] [bench args...]
# Runs every GPU test, then the kernel benchmark, then the PyTorch peer
# figures in the same call (same card, same state). Logs go to $OUT when set.
set -uo pipefail
bundle=${1:-.device-cudakernels}
shift || true
out=${OUT:-/tmp/kernels-out}
mkdir -p "$out"
date -u +"date %Y-%m-%dT%H:%M:%SZ" | tee "$out/tests.log"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv | tee -a "$out/tests.log"
fail=0
for t in "$bundle"/bin/*_test; do
  name=$(basename "$t")
  echo "=== $name" | tee -a "$out/tests.log"
  if ! "$bundle/run.sh" "$name" --gtest_brief=0 >>"$out/tests.log" 2>&1; then
    echo "FAILED: $name" | tee -a "$out/tests.log"
    fail=1
  fi
  grep -E "^\[  (PASSED|FAILED) |^\[==========\]|rel_l2" "$out/tests.log" | tail -n 4
done
if [[ -x "$bundle/bin/kernels_bench" ]]; then
  "$bundle/run.sh" kernels_bench --json "$out/kernels_bench.json" "$@" 2>&1 | tee "$out/bench.log"
fi
if [[ -f "$bundle/torch_kernels_baseline.py" ]]; then
  PYTHONUNBUFFERED=1 python3 -W ignore "$bundle/torch_kernels_baseline.py" 2>&1 | tee "$out/peer.log"
fi
# The same peers timed without per-call host overhead (CUDA graphs).
if [[ -f "$bundle/torch_peer_kernels.py" ]]; then
  PYTHONUNBUFFERED=1 python3 -W ignore "$bundle/torch_peer_kernels.py" 2>&1 | tee "$out/peer_graph.log"
fi
echo "tests: $([[ $fail == 0 ]] && echo all passed || echo SOME FAILED)"
exit $fail
