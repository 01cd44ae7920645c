#!/usr/bin/env bash
# Session 13, call 2: how steady is each candidate default's accuracy on CUDA? Call 1 had the
# default lose 8 of 600 answers (earlier calls: 6). Three processes (GEMM schedules are tuned per
# process, so bf16 numerics differ between them), the third with batches of 32; in each, MemShare
# off, the default and the curve's points with >= 30 % saved at block size 16, then block size 8
# with numbers kept. 600 held-out problems, no memory pressure. Bundle as call 1.
set -uo pipefail
N=.device-s13ms
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SECONDS=0
C16="memshare=off; name=default memshare=on; name=cand4 candidates=4; name=lex0.2 tau_lex=0.2; name=steps48-64 min_step=48 max_step=64; name=cand4-lex0.2 candidates=4 tau_lex=0.2"
C8="memshare=off; name=b8-keep numbers=keep; name=b8-keep-kv1.2 numbers=keep tau_kv=1.2"
run() {  # tag max_num_seqs block_size configs
  timeout 200 $N/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=$2 --out=$O/r/$1 \
    --block_size=$3 --configs="$4" > $O/r/$1.log 2>&1
  echo "== $1 rc=$? t=$SECONDS"; sed -n '/^config /,/^$/p' $O/r/$1.log | cut -c1-75
}
run p1_b16 64 16 "$C16"; run p2_b16 64 16 "$C16"; run p3_b16_s32 32 16 "$C16"
run p1_b8 64 8 "$C8"; run p3_b8_s32 32 8 "$C8"
cd $O && tar czf call2.tgz r && rm -rf r
