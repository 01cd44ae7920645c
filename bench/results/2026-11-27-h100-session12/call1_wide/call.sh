#!/usr/bin/env bash
# Session 12, call 1: the skinny GEMM's column split (SkinnyGemmArgs::wide_ctas). Bundle
# .device-s12a: scripts/device-bundle.sh --xz --out .device-s12a //tests/gpu:gemm_test
# //tests/gpu:cuda_backend_test //bench:cuda_backend_bench //bench:kernels_bench.
# gemm_test; kernels_bench's decode GEMMs at 1 and 64 tokens; the b64 decode step with the
# column split on (default) and off (--skinny_wide=0), alternated; b1 both; cuda_backend_test.
set -uo pipefail
N=.device-s12a
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 200 $N/run.sh gemm_test --gtest_brief=1 > $O/r/gemm_test.log 2>&1; echo "gemm_test rc=$? t=$SECONDS"
grep -E "Tune chose|^\[  PASSED|^\[  FAILED|FAILED|Failure|error" $O/r/gemm_test.log | head -30
timeout 120 $N/run.sh kernels_bench --only gemm --gemm_m 1,64 > $O/r/kb.log 2>&1; echo "kb rc=$? t=$SECONDS"
grep -E "gate_up" $O/r/kb.log | grep -E "stream-k|wide|tuned|cublaslt" | cut -c1-150 | head -24
step() {  # batch tag [flags]
  $N/run.sh cuda_backend_bench --prompts=$1 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$1 --json=$O/r/step_b$1_$2.json ${3:-} > $O/r/step_b$1_$2.log 2>&1
  echo "b$1 $2: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined[a-z_]*":[0-9.]*\|"gemms":"[^"]*' $O/r/step_b$1_$2.json | tr '\n' ' ' | sed 's/skinny-wgmma//g')"
}
for r in 1 2 3; do step 64 wide$r; step 64 sk$r "--skinny_wide=0"; done
step 1 wide1; step 1 sk1 "--skinny_wide=0"
echo "t=$SECONDS"
timeout 150 $N/run.sh cuda_backend_test --gtest_brief=1 > $O/r/cuda_backend_test.log 2>&1; echo "cuda_backend_test rc=$? t=$SECONDS"
grep -E "^\[  PASSED|^\[  FAILED|FAILED" $O/r/cuda_backend_test.log | head
cd $O && tar czf call1.tgz r && rm -rf r
