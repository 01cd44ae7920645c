#!/usr/bin/env bash
# Session 9, call 2: the L2 warm again, its prefetches now spread over a CTA a
# multiprocessor (call 1's single CTA made the step slower). .device-s9a =
# base (5c611d5), .device-s9c = call 1's stream-K change + this warm. b64 decode
# step: base, then new at warm 0 / 16 / 32 MiB, alternated twice; b1 base/new.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in .device-s9a .device-s9c; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
step() {  # tag batch warm_mb
  local d=.device-s9a; [[ $1 == new* ]] && d=.device-s9c
  local extra=""; [[ $1 == new* ]] && extra="--l2_warm_mb=$3"
  $d/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 $extra --json=$O/r/step_$1_b$2.json > $O/r/step_$1_b$2.log 2>&1
  echo "b$2 $1: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"host_[a-z]*_us":[0-9.]*' $O/r/step_$1_b$2.json | tr '\n' ' ')"
}
step base 64; step new0 64 0; step new16 64 16; step new32 64 32
step base2 64; step new0b 64 0; step new16b 64 16; step new32b 64 32
step base 1; step new0 1 0; step new32 1 32
echo "t=$SECONDS"
cd $O && tar czf call2.tgz r && rm -rf r
