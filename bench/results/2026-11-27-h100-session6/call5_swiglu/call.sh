#!/usr/bin/env bash
# Session 6, call 5: SwiGLU in the skinny GEMM's epilogue. NEW = .device-new
# (every single-GPU test, the benches), BASE = .device-diag (5e95b50).
set -uo pipefail
N=.device-new; B=.device-diag
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $B; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
OUT=$O/r bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$?"
grep -E "^=== |PASSED|FAILED" $O/r/tests.log | paste - - | tr -s ' ' | cut -c1-120
timeout 150 $N/run.sh kernels_bench --only gemm,misc > $O/r/kb_new.log 2>&1; echo "kb rc=$?"
grep -E "^gemm gate_up M=(1|16|64) .*(stream-k=132 pdl=1|splits=1 pdl=1)|^silu" $O/r/kb_new.log | grep -v "^gemm.*skinny splits" | sort -u | cut -c1-120
step() {  # which batch tag
  local d=$B; [[ $1 == new ]] && d=$N
  $d/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 --decode_batch=$2 \
    --json=$O/r/step_$1_b$2_$3.json > $O/r/step_$1_b$2_$3.log 2>&1
  echo "b$2 $1: $(grep -E 'decode step ms \(batch' $O/r/step_$1_b$2_$3.log | tr -s ' ') | $(grep 'decode step GEMMs at' $O/r/step_$1_b$2_$3.log | tail -1 | cut -c1-160)"
}
step base 64 0; step new 64 0; step base 64 1; step new 64 1
step base 16 0; step new 16 0; step base 1 0; step new 1 0
cd $O && tar czf callA.tgz r && rm -rf r
