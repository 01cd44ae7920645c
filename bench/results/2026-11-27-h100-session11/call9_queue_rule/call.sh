#!/usr/bin/env bash
# Session 11, call 9 (experiment build .device-s11g, experiment.patch beside this
# script). The queue schedule's default shape as a rule (cut = half of the last
# round's tiles, tiles mod CTAs, in two chunks; none where the rounds are whole: the
# LM head's 1,188 tiles are 9 x 132) for every stream-K product (MEMSHARE_EXP_QUEUE=3),
# against stream-K, at b64, b16 and b1; gate/up cut 8 and 24 beside the rule's 16;
# gemm_test with the rule on every stream-K launch.
set -uo pipefail
N=.device-s11g
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
MEMSHARE_EXP_QUEUE_ALL=-1:0 timeout 120 $N/run.sh gemm_test > $O/r/gemm_test_rule.log 2>&1
echo "gemm_test rule rc=$? t=$SECONDS: $(grep -E '^\[  PASSED|^\[  FAILED' $O/r/gemm_test_rule.log | tr '\n' ' ')"
export MEMSHARE_EXP_FORCE=37888:3584:0
step() {  # tag batch
  $N/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 \
    --budgets=2048 --repeats=1 --decode_batch=$2 --early_dependents=12 --json=$O/r/step_$1.json > $O/r/step_$1.log 2>&1
  echo "$1 t=$SECONDS: $(grep -o '"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined_ms":[0-9.]*' $O/r/step_$1.json | tr '\n' ' ')"
}
for r in 1 2 3; do
  step b64_sk_$r 64
  MEMSHARE_EXP_QUEUE=3:-1:0 step b64_rule_$r 64
done
for r in 1 2; do
  MEMSHARE_EXP_QUEUE=3:8:28:0:0 step b64_g8_$r 64
  MEMSHARE_EXP_QUEUE=3:24:28:0:0 step b64_g24_$r 64
  step b16_sk_$r 16; MEMSHARE_EXP_QUEUE=3:-1:0 step b16_rule_$r 16
  step b1_sk_$r 1; MEMSHARE_EXP_QUEUE=3:-1:0 step b1_rule_$r 1
done
echo "t=$SECONDS"
cd $O && tar czf call9.tgz r && rm -rf r
