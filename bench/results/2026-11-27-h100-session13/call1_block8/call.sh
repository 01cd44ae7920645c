#!/usr/bin/env bash
# Session 13, call 1: the accuracy/memory point "KV blocks of 8 tokens, numbers kept" on CUDA (bf16),
# beside MemShare off and the default, at both block sizes, 600 held-out problems, no memory
# pressure (bundle .device-s13ms: scripts/device-bundle.sh --xz --out .device-s13ms
# //bench/memshare_eval:memshare_eval). Block size 8 runs the generic attention kernel (the fast
# ones take 16 only), so only its accuracy and memory figures count here, not its speed.
set -uo pipefail
N=.device-s13ms
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SECONDS=0
run() {  # tag block_size configs
  timeout 280 $N/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$1 \
    --block_size=$2 --configs="$3" > $O/r/$1.log 2>&1
  echo "== $1 rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$1.log | head -6
}
run b16 16 "memshare=off; name=default memshare=on; name=keep memshare=on numbers=keep"
run b8 8 "memshare=off; name=default memshare=on; name=keep memshare=on numbers=keep; name=keep-kv1.2 memshare=on numbers=keep tau_kv=1.2"
cd $O && tar czf call1.tgz r && rm -rf r
