#!/usr/bin/env bash
# Session 8, call 2: where the skinny GEMM loses at 64 tokens. kernels_bench's
# GEMM section at 1 and 64 tokens for the committed kernel (.device-s8k) and
# two experiment builds, not committed: E1 without any epilogue after the
# main loop (.device-s8e1), E2 without the MMAs (.device-s8e2; the stages are
# still waited for and released). Wrong results, timing only.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
SECONDS=0
for d in .device-s8k .device-s8e1 .device-s8e2 .device-s8k; do
  [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d
  tag=$(basename $d); [[ -f $O/r/$tag.log ]] && tag=${tag}_again
  timeout 170 $d/run.sh kernels_bench --only gemm --gemm_m 1,64 > $O/r/$tag.log 2>&1
  echo "== $tag rc=$? t=$SECONDS"
  grep -E "skinny-wgmma (splits=[0-9]+ pdl=1|stream-k=[0-9]+ pdl=1)|tuned-cold" $O/r/$tag.log | sed -E 's/ N=[0-9]+ K=[0-9]+//; s/\(graph\)//' | cut -c1-150
done
cd $O && tar czf call2.tgz r && rm -rf r
