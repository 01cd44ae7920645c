#!/usr/bin/env bash
# Session 6, call 7: the cluster split's closing sum in batches of four
# units a thread (every peer's loads of a batch at once). NEW = .device-red,
# BASE = .device-new (967e434, SwiGLU epilogue).
set -uo pipefail
N=.device-red; B=.device-new
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $B; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
for t in gemm_test cuda_backend_test; do
  $N/run.sh $t --gtest_brief=1 > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ')"
done
for w in base new; do
  [[ $w == base ]] && d=$B || d=$N
  timeout 150 $d/run.sh kernels_bench --only gemm > $O/r/gemm_$w.log 2>&1; echo "gemm $w rc=$?"
done
for w in base new; do echo "== $w"; grep -E "^gemm (down|qkv|o) M=(16|64) .*wgmma splits=[0-9] pdl=1" $O/r/gemm_$w.log | awk '{print $2,$3,$6,$7,$(NF-4),$(NF-3)}' | sort -u; done
step() {
  local d=$B; [[ $1 == new ]] && d=$N
  $d/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 --decode_batch=$2 \
    --json=$O/r/step_$1_b$2_$3.json > $O/r/step_$1_b$2_$3.log 2>&1
  echo "b$2 $1: $(grep -E 'decode step ms \(batch' $O/r/step_$1_b$2_$3.log | tr -s ' ') gpu $(grep -o '"median_gpu_ms":[0-9.]*' $O/r/step_$1_b$2_$3.json)"
}
step base 64 0; step new 64 0; step base 64 1; step new 64 1; step base 64 2; step new 64 2
cd $O && tar czf red.tgz r && rm -rf r
