#!/usr/bin/env bash
# Session 6, call 3: one-box stages for the skinny GEMM past 16 tokens
# (Layout::kStageBoxes; reverted). NEW = .device-new, BASE = .device-diag (HEAD 5e95b50).
set -uo pipefail
N=.device-new; B=.device-diag
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $B; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $O/r/gpu.txt
for t in gemm_test cuda_backend_test; do
  $N/run.sh $t --gtest_brief=1 > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ')"
done
for w in base new; do
  [[ $w == base ]] && d=$B || d=$N
  timeout 150 $d/run.sh kernels_bench --only gemm > $O/r/gemm_$w.log 2>&1; echo "gemm $w rc=$?"
done
for w in base new base new; do
  [[ $w == base ]] && d=$B || d=$N
  n=$(ls $O/r | grep -c "step_${w}_b64" || true)
  $d/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 --decode_batch=64 \
    --json=$O/r/step_${w}_b64_$n.json > $O/r/step_${w}_b64_$n.log 2>&1
  echo "b64 $w: $(grep -E 'decode step ms \(batch' $O/r/step_${w}_b64_$n.log | tr -s ' ') | $(grep 'decode step GEMMs at 64' $O/r/step_${w}_b64_$n.log)"
done
for w in base new; do
  [[ $w == base ]] && d=$B || d=$N
  $d/run.sh cuda_backend_bench --prompts=16 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 --decode_batch=16 \
    --json=$O/r/step_${w}_b16.json > $O/r/step_${w}_b16.log 2>&1
  echo "b16 $w: $(grep -E 'decode step ms \(batch' $O/r/step_${w}_b16.log | tr -s ' ')"
done
cd $O && tar czf new.tgz r && rm -rf r
