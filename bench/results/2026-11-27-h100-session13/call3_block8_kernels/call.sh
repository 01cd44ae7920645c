#!/usr/bin/env bash
# Session 13, call 3: the fast attention kernels at block size 8 (bundle .device-s13b:
# scripts/device-bundle.sh --xz --out .device-s13b //tests/gpu:attention_test
# //tests/gpu:cuda_backend_test //tests/gpu:cuda_backend_golden_test //tests/gpu:llm_engine_cuda_test
# //bench:cuda_backend_bench //bench/memshare_eval:memshare_eval, plus
# tools/golden/make_bf16_reference.py, bench/run_cuda_backend_device.sh, bench/floor.py,
# bench/floor_report.sh).
#  1. the four test binaries (attention_test has the new block-8 cases);
#  2. the 7B decode step at b64, ctx 1,024, block size 16 and 8 alternated;
#  3. the tiny reasoner, 600 problems: block 8 with numbers kept, no pressure, then under
#     pressure at equal memory (480 blocks of 16 = 960 of 8) beside block 16 off / default.
set -uo pipefail
N=.device-s13b
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SECONDS=0
OUT=$O/r timeout 300 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$? t=$SECONDS"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
grep -B2 -A8 "Failure" $O/r/tests.log | head -40
rm -f $O/r/bf16ref.tgz
step() {  # tag block_size
  timeout 120 $N/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=64 --block_size=$2 --json=$O/r/step_$1.json > $O/r/step_$1.log 2>&1
  echo "$1: $(grep -o '"median_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined[a-z_]*":[0-9.]*' $O/r/step_$1.json | tr '\n' ' ')"
}
step b16_1 16; step b8_1 8; step b16_2 16; step b8_2 8
echo "t=$SECONDS"
ev() {  # tag block_size num_blocks configs
  timeout 150 $N/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$1 \
    --block_size=$2 --num_blocks=$3 --admission_reserve=0 --configs="$4" > $O/r/$1.log 2>&1
  echo "== $1 rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$1.log | cut -c1-150 | head -12
}
ev b8_free 8 0 "memshare=off; name=b8-keep memshare=on numbers=keep"
ev p16 16 480 "memshare=off; name=default memshare=on"
ev p8 8 960 "memshare=off; name=b8-keep memshare=on numbers=keep"
ev p16b 16 480 "memshare=off; name=default memshare=on"
ev p8b 8 960 "memshare=off; name=b8-keep memshare=on numbers=keep"
cd $O && tar czf call3.tgz r && rm -rf r
