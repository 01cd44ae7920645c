#!/usr/bin/env bash
# Session 13, call 4: the new defaults (8-token blocks, numbers kept; 995f0a2). Bundle .device-s13c:
# scripts/device-bundle.sh --xz --out .device-s13c //tests/gpu:llm_engine_cuda_test
# //bench:cuda_backend_bench //bench/memshare_eval:memshare_eval, plus bench/run_cuda_backend_device.sh,
# bench/floor.py, bench/floor_report.sh, tools/golden/make_bf16_reference.py and
# ../shared/bench/hf_baseline.py.
#  1. llm_engine_cuda_test;
#  2. memshare_eval with no block or policy flags (the defaults), 600 problems, free and under
#     pressure (960 blocks of 8 = the memory of 480 of 16);
#  3. the offline workload 64 x 512 -> 128 at block size 16 and 8 (LlmEngine pipelined), then the
#     transformers peer.
set -uo pipefail
N=.device-s13c
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SECONDS=0
timeout 120 $N/run.sh llm_engine_cuda_test > $O/r/llm_engine_cuda_test.log 2>&1; echo "llm_engine_cuda_test rc=$?"
grep -E "^\[  PASSED|^\[  FAILED" $O/r/llm_engine_cuda_test.log
ev() {  # tag num_blocks
  timeout 150 $N/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$1 \
    --num_blocks=$2 --admission_reserve=0 --configs="memshare=off; name=default memshare=on" > $O/r/$1.log 2>&1
  echo "== $1 rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$1.log | cut -c1-150 | head -12
}
ev defaults_free 0
ev defaults_p960 960
offline() {  # tag block_size
  mkdir -p $O/r/$1
  OUT=$O/r/$1 timeout 200 bash $N/run_cuda_backend_device.sh $N bench --budgets=16384 --tune_prefill=2 --repeats=3 \
    --engine=device --block_size=$2 > $O/r/$1/bench_stage.log 2>&1; echo "== offline $1 rc=$? t=$SECONDS"
  grep -E "throughput seconds|output tok/s" $O/r/$1/bench.log | head -4
  grep -o '"measure":"engine_throughput"[^}]*' $O/r/$1/bench.log | grep -o '"sampling":"[a-z-]*"\|"seconds":[0-9.]*\|"ratio_to_direct":[0-9.]*' | paste -sd' '
  tail -3 $O/r/$1/floor.log
}
offline b16 16; offline b8 8
PYTHONUNBUFFERED=1 timeout 150 python3 -W ignore $N/hf_baseline.py --model r1-distill-qwen-7b --prompts 64 \
  --prompt-len 512 --gen-len 128 --modes static > $O/r/peer.log 2>&1; echo "peer rc=$? t=$SECONDS"
tail -n 4 $O/r/peer.log
cd $O && tar czf call4.tgz r && rm -rf r
