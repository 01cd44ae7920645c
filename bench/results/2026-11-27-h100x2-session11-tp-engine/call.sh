#!/usr/bin/env bash
# Session 11: the offline workload (64 prompts x 512 tokens -> 128, greedy) through
# LlmEngine over TP=1 and over a TP=2 group (rank 0's GroupLeaderBackend), pipelined
# and one by one alternated (tp_bench --engine_runs). Bundle .device-s11tp3:
# scripts/device-bundle.sh --xz --out .device-s11tp3 //bench:tp_bench
# //bench:cuda_backend_bench. Also a small cuda_backend_bench engine run (the engine
# workload code moved to bench/engine_throughput.cc).
set -uo pipefail
N=.device-s11tp3
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
export NCCL_NVLS_ENABLE=0
SECONDS=0
CUDA_VISIBLE_DEVICES=0 timeout 120 $N/run.sh cuda_backend_bench --prompts=16 --prompt_len=64 --gen_len=16 \
  --budgets=2048 --repeats=1 --engine=device,device-sync --json=$O/r/cbb.json > $O/r/cbb.log 2>&1
echo "cuda_backend_bench rc=$? t=$SECONDS"
grep -o '"measure":"engine_throughput"[^}]*' $O/r/cbb.json | grep -o '"sampling":"[a-z-]*"\|"seconds":[0-9.]*\|"output_tokens":[0-9]*' | paste -sd' '
timeout 150 $N/run.sh tp_bench --tp=1 --collectives=false --engine_runs=2 --json=$O/r/tp1.json > $O/r/tp1.log 2>&1
echo "tp1 rc=$? t=$SECONDS"
timeout 150 $N/run.sh tp_bench --tp=2 --rank=1 --port=29671 --collectives=false --engine_runs=2 > $O/r/tp2_rank1.log 2>&1 &
r1=$!
timeout 150 $N/run.sh tp_bench --tp=2 --rank=0 --port=29671 --collectives=false --engine_runs=2 --json=$O/r/tp2.json > $O/r/tp2.log 2>&1
echo "tp2 rc=$? t=$SECONDS"; wait $r1; echo "rank1 rc=$?"
for f in tp1 tp2; do
  grep -o '"measure":"decode_step"[^}]*' $O/r/$f.json | grep -o '"tp":[0-9]*\|"median_ms":[0-9.]*\|"pipelined_ms":[0-9.]*' | paste -sd' '
  grep -o '"measure":"engine_throughput"[^}]*' $O/r/$f.json | grep -o '"pipelined":[a-z]*\|"seconds":[0-9.]*\|"output_tok_per_s":[0-9.]*' | paste -sd' ' | sed 's/"pipelined"/\n"pipelined"/g'
done
cd $O && tar czf tpe.tgz r && rm -rf r
