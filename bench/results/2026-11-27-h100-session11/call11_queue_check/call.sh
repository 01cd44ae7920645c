#!/usr/bin/env bash
# Session 11, call 11: call 10's final build (.device-s11h) found the queue slower
# (b64 6.98 against 6.92 ms) where call 9's experiment build (.device-s11g) found it
# faster (6.855 against 6.935). Both builds on one machine, alternated: s11g with
# gate/up forced to stream-K and the queue rule on or off (--early_dependents=12);
# s11h with the queue on or off and early dependents 12 or 0.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in .device-s11g .device-s11h; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
step() {  # bundle tag [flags]
  $1/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=64 --json=$O/r/step_$2.json ${3:-} > $O/r/step_$2.log 2>&1
  echo "$2 t=$SECONDS: $(grep -o '"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined_ms":[0-9.]*\|"gemms":"[^"]*' $O/r/step_$2.json | tr '\n' ' ' | sed 's/skinny-wgmma//g')"
}
for r in 1 2; do
  MEMSHARE_EXP_FORCE=37888:3584:0 step .device-s11g g_sk_$r --early_dependents=12
  MEMSHARE_EXP_FORCE=37888:3584:0 MEMSHARE_EXP_QUEUE=3:-1:0 step .device-s11g g_rule_$r --early_dependents=12
  step .device-s11h h_q12_$r "--early_dependents=12"
  step .device-s11h h_q0_$r "--early_dependents=0"
  step .device-s11h h_sk12_$r "--skinny_queue=false --early_dependents=12"
  step .device-s11h h_sk0_$r "--skinny_queue=false --early_dependents=0"
done
echo "t=$SECONDS"
cd $O && tar czf call11.tgz r && rm -rf r
