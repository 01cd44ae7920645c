#!/usr/bin/env bash
# Session 9, call 9: where the tiny reasoner's CUDA steps go (memshare_eval's
# phase table, .device-s9msd = this session's last code):
# 600 problems under memory pressure (480 blocks, eager admission) and with a
# pool large enough, MemShare off and on.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
d=.device-s9msd; [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d
SECONDS=0
for spec in "p480 --num_blocks=480 --admission_reserve=0" "full --num_blocks=0"; do
  set -- $spec; tag=$1; shift
  timeout 200 $d/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$tag "$@" \
    --configs="memshare=off; name=default memshare=on" > $O/r/$tag.log 2>&1
  echo "== $tag rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$tag.log | head -9
done
cd $O && tar czf call9.tgz r && rm -rf r
