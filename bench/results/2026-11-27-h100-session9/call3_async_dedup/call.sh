#!/usr/bin/env bash
# Session 9, call 3: MemShare's distance sums started after a step and
# finished after the next (KvManager::StartDedup / FinishDedup,
# CudaBackend::StartDistanceSums), against the synchronous pass.
# .device-s9msa = base (c23b025), .device-s9msb = new. GPU tests of the new
# build; then the tiny reasoner's 600 held-out problems on the CUDA backend:
# the whole set with a pool large enough (accuracy, saved), and under memory
# pressure (480 blocks, eager admission), base and new alternated.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in .device-s9msa .device-s9msb; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
for t in cuda_backend_test llm_engine_cuda_test; do
  timeout 240 .device-s9msb/run.sh $t > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ') t=$SECONDS"
  grep -E "^\[  FAILED" $O/r/$t.log | head -8
done
ev() {  # tag bundle args...
  local tag=$1 d=$2; shift 2
  timeout 300 $d/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$tag "$@" > $O/r/$tag.log 2>&1
  echo "== $tag rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$tag.log | head -12
}
ev full_new .device-s9msb --num_blocks=0 --configs="memshare=off; name=default memshare=on"
for r in 1 2; do
  ev p480_base_$r .device-s9msa --num_blocks=480 --admission_reserve=0 --configs="memshare=off; name=default memshare=on"
  ev p480_new_$r .device-s9msb --num_blocks=480 --admission_reserve=0 --configs="memshare=off; name=default memshare=on"
done
echo "t=$SECONDS"
cd $O && tar czf call3.tgz r && rm -rf r
