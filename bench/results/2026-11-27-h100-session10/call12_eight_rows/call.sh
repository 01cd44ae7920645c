#!/usr/bin/env bash
# Session 10, call 12: the tiny reasoner's prefill with 8, 9, 12, 16 rows of
# logits (the LM head at tuned and untuned row counts), the same plan six
# times: bit for bit? Experiment test ExperimentTest.EightRows appended to
# cuda_backend_test (not committed; bundle .device-s10k).
set -uo pipefail
N=.device-s10k
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
timeout 200 $N/run.sh cuda_backend_test --gtest_filter='ExperimentTest.*' > $O/r/rows.log 2>&1; echo "rc=$?"
grep -hE "^EXP|FAILED|Failure" $O/r/rows.log
cd $O && tar czf call12.tgz r && rm -rf r
