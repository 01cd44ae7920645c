#!/usr/bin/env bash
# Session 9, call 8: Scheduler::UpdatePeaks without a hash set per sequence
# and step (f2ac2ea). The tiny reasoner's 600 held-out problems on the CUDA
# backend under memory pressure (480 blocks, eager admission), MemShare off
# and on, base (.device-s9msa, c23b025) and new (.device-s9msc) alternated
# twice; then the whole set with a pool large enough on the new build.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in .device-s9msa .device-s9msc; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
ev() {  # tag bundle args...
  local tag=$1 d=$2; shift 2
  timeout 300 $d/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$tag "$@" > $O/r/$tag.log 2>&1
  echo "== $tag rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$tag.log | head -4
}
for r in 1 2; do
  ev p480_base_$r .device-s9msa --num_blocks=480 --admission_reserve=0 --configs="memshare=off; name=default memshare=on"
  ev p480_new_$r .device-s9msc --num_blocks=480 --admission_reserve=0 --configs="memshare=off; name=default memshare=on"
done
ev full_new .device-s9msc --num_blocks=0 --configs="memshare=off; name=default memshare=on"
echo "t=$SECONDS"
cd $O && tar czf call8.tgz r && rm -rf r
