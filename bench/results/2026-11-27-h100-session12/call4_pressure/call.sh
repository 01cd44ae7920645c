#!/usr/bin/env bash
# Session 12, call 4: the tiny reasoner under memory pressure on the session's code (bundle
# .device-s12ms: scripts/device-bundle.sh --xz --out .device-s12ms //bench/memshare_eval:memshare_eval),
# with memshare_eval's new mean of the pool over the run: 600 problems, CUDA, eager admission,
# MemShare off and on, pool 480 blocks in two processes, then 320 and 800.
set -uo pipefail
N=.device-s12ms
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
run() {  # blocks tag
  timeout 100 $N/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$2 \
    --num_blocks=$1 --admission_reserve=0 --configs="memshare=off; name=default memshare=on" > $O/r/$2.log 2>&1
  echo "== $2 rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$2.log | head -4
}
run 480 p480_1; run 480 p480_2; run 320 p320; run 800 p800
cd $O && tar czf call4.tgz r && rm -rf r
