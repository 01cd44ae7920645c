#!/usr/bin/env bash
# Session 10, call 4: MemShare's distance sums beside pipelined steps (a
# second stream); the engine test on one shared backend. Bundle .device-s10d
# (scripts/device-bundle.sh --xz --out .device-s10d
# //tests/gpu:{cuda_backend,llm_engine_cuda,block_distance}_test
# //bench/memshare_eval:memshare_eval). Then the tiny reasoner under memory
# pressure (480 blocks), --async_scheduling on and off alternated.
set -uo pipefail
N=.device-s10d
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
for t in cuda_backend_test llm_engine_cuda_test block_distance_test; do
  timeout 120 $N/run.sh $t > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ')"
done
grep -E "^\[  FAILED|Failure|first difference" $O/r/*_test.log | head -20
echo "t=$SECONDS"
ev() {  # tag args...
  local tag=$1; shift
  timeout 200 $N/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$tag "$@" > $O/r/$tag.log 2>&1
  echo "== $tag rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$tag.log | head -4
}
for r in 1 2; do
  ev p480_async_$r --num_blocks=480 --admission_reserve=0 --configs="memshare=off; name=default memshare=on"
  ev p480_sync_$r --num_blocks=480 --admission_reserve=0 --async_scheduling=false --configs="memshare=off; name=default memshare=on"
done
echo "t=$SECONDS"
cd $O && tar czf call4.tgz r && rm -rf r
