#!/usr/bin/env bash
# Session 9, call 5: sampling's fast path (kernels/sampling.cu
# FastSelectAndDraw: count pass, gather of at most 4,096 candidates, sorts
# and cuts in shared memory). sampling_test, the device-sampling cases of
# cuda_backend_test and llm_engine_cuda_test on the new build (.device-s9s);
# kernels_bench's sampling lines, base (.device-s9a, 5c611d5) and new, twice.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in .device-s9a .device-s9s; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
timeout 120 .device-s9s/run.sh sampling_test > $O/r/sampling_test.log 2>&1; echo "sampling_test rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/sampling_test.log | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure" -A4 $O/r/sampling_test.log | head -30
timeout 200 .device-s9s/run.sh cuda_backend_test > $O/r/cuda_backend_test.log 2>&1; echo "cuda_backend_test rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/cuda_backend_test.log | tr '\n' ' ')"
timeout 120 .device-s9s/run.sh llm_engine_cuda_test > $O/r/llm_engine_cuda_test.log 2>&1; echo "llm_engine_cuda_test rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/llm_engine_cuda_test.log | tr '\n' ' ') t=$SECONDS"
for r in 1 2; do
  for d in s9a s9s; do
    timeout 120 .device-$d/run.sh kernels_bench --only misc > $O/r/misc_${d}_$r.log 2>&1
    echo "misc $d run $r rc=$?"; grep "^sample" $O/r/misc_${d}_$r.log | sort -u
  done
done
echo "t=$SECONDS"
cd $O && tar czf call5.tgz r && rm -rf r
