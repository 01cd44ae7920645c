#!/usr/bin/env bash
# Session 10, call 8: the tiny reasoner under memory pressure with pipelined
# steps (bundle .device-s10g, f433fa4): MemShare off and on at pools of 320,
# 480, 640 and 800 blocks (eager admission), and at 480 blocks with
# conservative admission (--admission_reserve 0.1, 0.2); one process each.
set -uo pipefail
N=.device-s10g
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
ev() {  # tag args...
  local tag=$1; shift
  timeout 100 $N/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$tag "$@" > $O/r/$tag.log 2>&1
  echo "== $tag rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$tag.log | sed -n '1,3p;6,8p'
}
for nb in 320 480 640 800; do
  ev p${nb} --num_blocks=$nb --admission_reserve=0 --configs="memshare=off; name=default memshare=on"
done
for rr in 0.1 0.2; do
  ev p480_r$rr --num_blocks=480 --admission_reserve=$rr --configs="memshare=off; name=default memshare=on"
done
echo "t=$SECONDS"
cd $O && tar czf call8.tgz r && rm -rf r
