#!/usr/bin/env bash
# Session 11, call 1 (experiment build .device-s11a: scripts/device-bundle.sh --xz
# --out .device-s11a //bench:cuda_backend_bench from a tree with the experiment
# patch experiment.patch beside this script). A per-launch timeline of the skinny
# GEMMs in one replay of the b64 decode graph (MEMSHARE_GEMM_TRACE), and the
# decode step with --early_dependents masks (the next kernel launched at a
# product's start: 1 QKV, 2 O, 4 gate/up, 8 down, 16 LM head) alternated.
set -uo pipefail
N=.device-s11a
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
step() {  # batch tag [flags]
  $N/run.sh cuda_backend_bench --prompts=$1 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$1 --json=$O/r/step_b$1_$2.json ${3:-} > $O/r/step_b$1_$2.log 2>&1
  echo "b$1 $2 t=$SECONDS: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined_ms":[0-9.]*' $O/r/step_b$1_$2.json | tr '\n' ' ')"
}
MEMSHARE_GEMM_TRACE=1 step 64 trace0
MEMSHARE_GEMM_TRACE=1 step 64 trace4 --early_dependents=4
for r in 1 2; do
  for m in 0 4 12 31; do step 64 m${m}_$r --early_dependents=$m; done
done
echo "t=$SECONDS"
cd $O && tar czf call1.tgz r && rm -rf r
