#!/usr/bin/env bash
# Session 13, call 7: decode attention at block size 8 (the new default) against 16, at contexts
# of 1k-16k, batch 64 / 8 / 1, unique, shared and shifted-view tables (kernels_bench --only attn
# --block_size B; bundle .device-s13k: scripts/device-bundle.sh --xz --out .device-s13k
# //bench:kernels_bench). Alternated 16, 8, 16, 8.
set -uo pipefail
N=.device-s13k
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SECONDS=0
for r in 1 2; do
  for b in 16 8; do
    timeout 200 $N/run.sh kernels_bench --only attn --block_size $b --json $O/r/attn_b${b}_$r.json > $O/r/attn_b${b}_$r.log 2>&1
    echo "== b$b run $r rc=$? t=$SECONDS"
  done
done
for b in 16 8; do echo "--- b$b run 2"; grep -E "decode attn|copy" $O/r/attn_b${b}_2.log | cut -c1-140; done
cd $O && tar czf call7.tgz r && rm -rf r
