#!/usr/bin/env bash
# Session 9, call 7: sampling's candidates in shared memory, final version
# (call 6's, with the count bound of top-p summed by every warp instead of
# one thread). sampling_test and cuda_backend_test on it (.device-s9v);
# kernels_bench's sampling lines (every case, the two new ones included),
# base (.device-s9u: 5f3fc9f's kernels/sampling.cu, this bench) and new,
# alternated twice.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in .device-s9u .device-s9v; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
timeout 120 .device-s9v/run.sh sampling_test > $O/r/sampling_test.log 2>&1; echo "sampling_test rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/sampling_test.log | tr '\n' ' ')"
timeout 200 .device-s9v/run.sh cuda_backend_test > $O/r/cuda_backend_test.log 2>&1; echo "cuda_backend_test rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/cuda_backend_test.log | tr '\n' ' ') t=$SECONDS"
for r in 1 2; do
  for d in s9u s9v; do
    timeout 120 .device-$d/run.sh kernels_bench --only misc > $O/r/misc_${d}_$r.log 2>&1
    echo "misc $d run $r rc=$?"; grep "^sample" $O/r/misc_${d}_$r.log | sort -u
  done
done
echo "t=$SECONDS"
cd $O && tar czf call7.tgz r && rm -rf r
