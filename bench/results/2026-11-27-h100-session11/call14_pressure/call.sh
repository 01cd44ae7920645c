#!/usr/bin/env bash
# Session 11, call 14: the tiny reasoner under memory pressure on the session's
# final code (a014909; bundle .device-s11k: scripts/device-bundle.sh --xz --out
# .device-s11k //bench/memshare_eval:memshare_eval): 600 problems, CUDA, pool 480
# blocks, eager admission, MemShare off and on, two processes.
set -uo pipefail
N=.device-s11k
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
for r in 1 2; do
  tag=p480_$r
  timeout 100 $N/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$tag \
    --num_blocks=480 --admission_reserve=0 --configs="memshare=off; name=default memshare=on" > $O/r/$tag.log 2>&1
  echo "== $tag rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$tag.log | head -4
done
cd $O && tar czf call14.tgz r && rm -rf r
