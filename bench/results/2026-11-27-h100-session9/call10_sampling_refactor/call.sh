#!/usr/bin/env bash
# Session 9, call 10: kernels/sampling.cu with one block scan for both draws
# (BlockInclusiveScan) and kernels_bench's sampling cases through one lambda
# (.device-s9w): sampling_test, cuda_backend_test, the sampling timings.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
d=.device-s9w; [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d
SECONDS=0
for t in sampling_test cuda_backend_test; do
  timeout 200 $d/run.sh $t > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ')"
done
timeout 120 $d/run.sh kernels_bench --only misc > $O/r/misc.log 2>&1; echo "misc rc=$?"; grep "^sample" $O/r/misc.log | sort -u
echo "t=$SECONDS"
cd $O && tar czf call10.tgz r && rm -rf r
