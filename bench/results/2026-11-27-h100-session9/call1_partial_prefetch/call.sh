#!/usr/bin/env bash
# Session 9, call 1: (a) the stream-K owner's first partial waited for by its
# producer and copied into a free stage while the consumers finish the run;
# (b) CudaBackend::Options::l2_warm_bytes (the first layer's weights fetched
# into L2 after each step, on a second stream). .device-s9a = base (5c611d5),
# .device-s9b = new. Tests on new; GEMMs at 1 and 64 tokens on both; the b64
# decode step alternated: base, new warm 0, new warm 32 MiB, new warm 48 MiB.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in .device-s9a .device-s9b; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
for t in gemm_test cuda_backend_test; do
  timeout 240 .device-s9b/run.sh $t > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ') t=$SECONDS"
  grep -E "^\[  FAILED" $O/r/$t.log | head -8
done
for d in s9a s9b; do
  timeout 170 .device-$d/run.sh kernels_bench --only gemm --gemm_m 1,64 > $O/r/gemm_$d.log 2>&1
  echo "gemm $d rc=$? t=$SECONDS"; grep -E "gate_up .*stream-k=132 pdl=1|down .*splits=4 pdl=1|tuned-cold" $O/r/gemm_$d.log | grep -v "skinny splits" | cut -c1-110
done
step() {  # tag batch warm_mb
  local d=.device-s9a; [[ $1 == new* ]] && d=.device-s9b
  local extra=""; [[ $1 == new* ]] && extra="--l2_warm_mb=$3"
  $d/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 $extra --json=$O/r/step_$1_b$2.json > $O/r/step_$1_b$2.log 2>&1
  echo "b$2 $1: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"host_[a-z]*_us":[0-9.]*' $O/r/step_$1_b$2.json | tr '\n' ' ')"
}
step base 64; step new0 64 0; step new32 64 32; step new48 64 48
step base2 64; step new0b 64 0; step new32b 64 32; step new48b 64 48
echo "t=$SECONDS"
