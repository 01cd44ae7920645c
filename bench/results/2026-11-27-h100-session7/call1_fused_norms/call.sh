#!/usr/bin/env bash
# Session 7, call 1: the RMSNorms in the skinny GEMM's epilogues
# (CudaBackend::Options::fuse_norms). Bundle .device-s7: the GPU tests of
# the change, then the decode step with the norms fused (1) and as kernels
# (0), alternated, same binary.
set -uo pipefail
N=.device-s7
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
OUT=$O/r timeout 300 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$?"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
grep -E "relative L2 of a logits row" $O/r/tests.log | cut -c1-150
step() {  # fuse batch tag
  $N/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 --fuse_norms=$1 --json=$O/r/step_f$1_b$2_$3.json > $O/r/step_f$1_b$2_$3.log 2>&1
  echo "b$2 fuse=$1: $(grep -E 'decode step ms \(batch' $O/r/step_f$1_b$2_$3.log | tr -s ' ') gpu $(grep -o '"median_gpu_ms":[0-9.]*' $O/r/step_f$1_b$2_$3.json | cut -d: -f2) | $(grep 'decode step GEMMs at' $O/r/step_f$1_b$2_$3.log | tail -1 | cut -c1-220)"
}
step 0 64 0; step 1 64 0; step 0 64 1; step 1 64 1
step 0 16 0; step 1 16 0; step 0 1 0; step 1 1 0
cd $O && tar czf call1.tgz r && rm -rf r
