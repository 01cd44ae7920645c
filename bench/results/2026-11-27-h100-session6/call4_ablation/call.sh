#!/usr/bin/env bash
# Session 6, call 4 (experiment build, not committed): ablation of the b64
# decode step (EXP_SKIP leaves kernels out of the graph: wrong outputs,
# timing only) and the SM clock / power while it runs.
set -uo pipefail
B=.device-abl
O=${OUT:-/tmp/out}; mkdir -p $O/r
tar xJf $B/bundle.tar.xz -C $B
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,clocks_event_reasons.active --format=csv -lms 200 > $O/r/smi.csv 2>&1 &
smi=$!
for skip in none attn silu norm qkv oproj silu,norm none; do
  echo "$(date +%T.%N) start $skip" >> $O/r/marks.txt
  EXP_SKIP=$([[ $skip == none ]] && echo "" || echo $skip) $B/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 \
    --budgets=2048 --repeats=1 --decode_batch=64 --json=$O/r/abl_${skip/,/_}.json > $O/r/abl_${skip/,/_}.log 2>&1
  echo "$(date +%T.%N) end $skip" >> $O/r/marks.txt
  echo "skip=$skip: $(grep -E 'decode step ms \(batch' $O/r/abl_${skip/,/_}.log | tr -s ' ')"
done
echo "$(date +%T.%N) start b1" >> $O/r/marks.txt
$B/run.sh cuda_backend_bench --prompts=1 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 --decode_batch=1 > $O/r/abl_b1.log 2>&1
echo "$(date +%T.%N) end b1" >> $O/r/marks.txt
echo "b1: $(grep -E 'decode step ms \(batch' $O/r/abl_b1.log | tr -s ' ')"
kill $smi
awk -F', ' 'NR>1 {print $2, $4, $5}' $O/r/smi.csv | sort | uniq -c | sort -rn | head -12
cd $O && tar czf abl.tgz r && rm -rf r
