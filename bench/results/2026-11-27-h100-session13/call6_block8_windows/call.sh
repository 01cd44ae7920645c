#!/usr/bin/env bash
# Session 13, call 6: the block-8 decode kernel loading its table entries the way the block-16 one
# does (lane i holds tile i's two entries, shuffled per tile) instead of per row. Bundle
# .device-s13d: scripts/device-bundle.sh --xz --out .device-s13d //tests/gpu:attention_test
# //bench:cuda_backend_bench //bench/memshare_eval:memshare_eval.
#  1. attention_test;
#  2. the 7B decode step, b64, ctx 1,024, block 16 and 8 alternated;
#  3. the tiny reasoner under pressure at equal memory, MemShare off: 480 blocks of 16 against
#     960 of 8, twice (call 3 had 8 at 64,5xx tok/s against 68,2xx at 16), then the default.
set -uo pipefail
N=.device-s13d
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SECONDS=0
timeout 120 $N/run.sh attention_test > $O/r/attention_test.log 2>&1; echo "attention_test rc=$?"
grep -E "^\[  PASSED|^\[  FAILED|Failure" $O/r/attention_test.log | head
step() {  # tag block_size
  timeout 120 $N/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=64 --block_size=$2 --json=$O/r/step_$1.json > $O/r/step_$1.log 2>&1
  echo "$1: $(grep -o '"median_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined_ms":[0-9.]*' $O/r/step_$1.json | tr '\n' ' ')"
}
step b16_1 16; step b8_1 8; step b16_2 16; step b8_2 8
ev() {  # tag block_size num_blocks configs
  timeout 150 $N/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$1 \
    --block_size=$2 --num_blocks=$3 --admission_reserve=0 --configs="$4" > $O/r/$1.log 2>&1
  echo "== $1 rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$1.log | cut -c1-150 | head -9
}
ev p16 16 480 "memshare=off"; ev p8 8 960 "memshare=off; name=default memshare=on"
ev p16b 16 480 "memshare=off"; ev p8b 8 960 "memshare=off; name=default memshare=on"
cd $O && tar czf call6.tgz r && rm -rf r
