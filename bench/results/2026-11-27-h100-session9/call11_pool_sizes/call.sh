#!/usr/bin/env bash
# Session 9, call 11: MemShare off against on for other pool sizes (320, 400,
# 640, 800 blocks; eager admission), 600 problems on the CUDA backend, this
# session's code (.device-s9msd), one process per pool (off and on paired).
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
d=.device-s9msd; [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d
SECONDS=0
for nb in 320 400 640 800; do
  timeout 100 $d/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/p$nb \
    --num_blocks=$nb --admission_reserve=0 --configs="memshare=off; name=default memshare=on" > $O/r/p$nb.log 2>&1
  echo "== p$nb rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/p$nb.log | head -8
done
cd $O && tar czf call11.tgz r && rm -rf r
