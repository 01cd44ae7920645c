#!/usr/bin/env bash
# Session 8, call 3: a per-CTA timeline (%globaltimer, written by consumer
# thread 0 into the workspace past the partials) of the stream-K gate/up
# product with SwiGLU at 1 and 64 tokens; experiment build .device-s8e3, not
# committed.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
d=.device-s8e3
[[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d
timeout 170 $d/run.sh kernels_bench --only gemm --gemm_m 1,64 > $O/r/trace.log 2>&1
echo "rc=$?"
grep -E "gate_up.*stream-k=132 pdl=1" $O/r/trace.log
cd $O && tar czf call3.tgz r && rm -rf r
