#!/usr/bin/env bash
# Session 11, call 6 (call 5's build .device-s11e; experiment.patch in call5_weighted/).
# The LM head on the queue schedule (MEMSHARE_EXP_QUEUE=2:cut:cb) against stream-K,
# gate/up forced to stream-K, b64 pipelined; and --early_dependents 0 / 12 at b16
# and b1.
set -uo pipefail
N=.device-s11e
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
export MEMSHARE_EXP_FORCE=37888:3584:0
step() {  # tag batch mask
  $N/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 \
    --budgets=2048 --repeats=1 --decode_batch=$2 --early_dependents=$3 --json=$O/r/step_$1.json > $O/r/step_$1.log 2>&1
  echo "$1 t=$SECONDS: $(grep -o '"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined_ms":[0-9.]*' $O/r/step_$1.json | tr '\n' ' ')"
}
for r in 1 2 3; do
  step base_$r 64 12
  MEMSHARE_EXP_QUEUE=2:-1:0 step lmq_$r 64 12
  MEMSHARE_EXP_QUEUE=2:-1:14 step lmq_cb14_$r 64 12
  MEMSHARE_EXP_QUEUE=2:0:0 step lmq_whole_$r 64 12
done
for r in 1 2; do
  step b16_m0_$r 16 0; step b16_m12_$r 16 12
  step b1_m0_$r 1 0; step b1_m12_$r 1 12
done
echo "t=$SECONDS"
cd $O && tar czf call6.tgz r && rm -rf r
