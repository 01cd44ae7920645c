#!/usr/bin/env bash
# Session 12, call 9: the backends' outputs emptied with StepOutput::Clear (a refactor after call
# 8). Bundle .device-s12g: scripts/device-bundle.sh --xz --out .device-s12g
# //tests/gpu:cuda_backend_test //tests/gpu:llm_engine_cuda_test //tests/gpu:cuda_backend_golden_test,
# plus tools/golden/make_bf16_reference.py and bench/run_cuda_backend_device.sh.
set -uo pipefail
N=.device-s12g
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
OUT=$O/r timeout 300 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$? t=$SECONDS"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
grep -A3 "Failure" $O/r/tests.log | head -20
rm -f $O/r/bf16ref.tgz
cd $O && tar czf call9.tgz r && rm -rf r
