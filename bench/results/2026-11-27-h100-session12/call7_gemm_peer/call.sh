#!/usr/bin/env bash
# Session 12, call 7: the decode-shaped GEMMs on the final kernels (the column split included)
# against cuBLAS through PyTorch in the same call. Bundle .device-s12k: scripts/device-bundle.sh
# --xz --out .device-s12k //bench:kernels_bench, plus ../shared/bench/torch_kernels_baseline.py
# and bench/torch_peer_kernels.py.
set -uo pipefail
N=.device-s12k
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
timeout 150 $N/run.sh kernels_bench --only gemm --gemm_m 1,16,64,256 --json $O/r/kernels_bench.json > $O/r/bench.log 2>&1; echo "kb rc=$? t=$SECONDS"
PYTHONUNBUFFERED=1 timeout 200 python3 -W ignore $N/torch_peer_kernels.py > $O/r/peer_graph.log 2>&1; echo "peer graph rc=$? t=$SECONDS"
PYTHONUNBUFFERED=1 timeout 200 python3 -W ignore $N/torch_kernels_baseline.py > $O/r/peer.log 2>&1; echo "peer rc=$? t=$SECONDS"
grep -E "tuned |wide|stream-k=132 pdl=1 \+silu" $O/r/bench.log | cut -c1-140
grep -o '"what": "peer gemm[^"]*", "us": [0-9.]*' $O/r/peer_graph.log
grep -o '"what": "gemm decode[^}]*' $O/r/peer.log | cut -c1-150
cd $O && tar czf call7.tgz r && rm -rf r
