#!/usr/bin/env bash
# Session 11, call 15: every single-GPU test on the session's last code
# (4149237: top-n logprob requests sampled on the device; TP pipelining's
# CudaBackend changes). Bundle .device-s11m: scripts/device-bundle.sh --xz
# --out .device-s11m //tests/gpu:<every single-GPU test>, plus
# tools/golden/make_bf16_reference.py and bench/run_cuda_backend_device.sh.
set -uo pipefail
N=.device-s11m
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
OUT=$O/r timeout 330 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$? t=$SECONDS"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
grep -A3 "Failure" $O/r/tests.log | head -20
rm -f $O/r/bf16ref.tgz
cd $O && tar czf call15.tgz r && rm -rf r
