#!/usr/bin/env bash
# Session 8, call 5: a finer per-CTA timeline (after griddepcontrol.wait, the partial stores, the fence, the owner's flag wait) (%globaltimer, written by consumer
# thread 0 into the workspace past the partials) of the stream-K gate/up
# product with SwiGLU at 1 and 64 tokens; experiment build .device-s8e4, not
# committed.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
d=.device-s8e4
[[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d
timeout 170 $d/run.sh kernels_bench --only gemm --gemm_m 1,64 > $O/r/trace.log 2>&1
echo "rc=$?"
grep -E "gate_up.*stream-k=132 pdl=1" $O/r/trace.log
cd $O && tar czf call5.tgz r && rm -rf r
