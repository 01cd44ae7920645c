#!/usr/bin/env bash
# Session 11, call 4 (experiment build .device-s11d, experiment.patch beside this
# script; MEMSHARE_EXP_FORCE=n:k:splits,... makes Tune take the skinny kernel at that
# split, 0 = stream-K). Gate/up on stream-K throughout; the b64 decode step with
# other plans for down, O and QKV, and other --early_dependents masks.
set -uo pipefail
N=.device-s11d
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
step() {  # tag force mask
  MEMSHARE_EXP_FORCE=37888:3584:0$2 $N/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 \
    --budgets=2048 --repeats=1 --decode_batch=64 --early_dependents=$3 --json=$O/r/step_$1.json > $O/r/step_$1.log 2>&1
  echo "$1 t=$SECONDS: $(grep -o '"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined_ms":[0-9.]*\|"gemms":"[^"]*' $O/r/step_$1.json | tr '\n' ' ' | sed 's/skinny-wgmma//g')"
}
for r in 1 2; do
  step base_m12_$r "" 12
  step m13_$r "" 13
  step m28_$r "" 28
  step down_sk_m12_$r ",3584:18944:0" 12
  step down_sk_m4_$r ",3584:18944:0" 4
  step o_s2_m12_$r ",3584:3584:2" 12
  step qkv_sk_m12_$r ",4608:3584:0" 12
done
echo "t=$SECONDS"
cd $O && tar czf call4.tgz r && rm -rf r
