#!/usr/bin/env bash
# Session 11, call 13 (experiment build .device-s11j, experiment.patch beside this
# script): per CTA of every stream-K launch in a b64 decode graph replay, its
# multiprocessor (%smid), start and lifetime (MEMSHARE_CTA_TRACE); three replays a
# process, two processes. Is a CTA's streaming speed a property of its
# multiprocessor?
set -uo pipefail
N=.device-s11j
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
for r in 1 2; do
  MEMSHARE_CTA_TRACE=1 $N/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 \
    --repeats=1 --decode_batch=64 --json=$O/r/step_$r.json > $O/r/step_$r.log 2>&1
  echo "p$r t=$SECONDS: $(grep -o '"pipelined_ms":[0-9.]*\|"gemms":"[^"]*' $O/r/step_$r.json | tr '\n' ' ') $(grep -c '^CTA ' $O/r/step_$r.log) launches"
done
cd $O && tar czf call13.tgz r && rm -rf r
