#!/usr/bin/env bash
# Session 10, call 14: the scheduler's first plan (12 tiny-reasoner prompts,
# greedy, sampled on the device) replayed directly five times as planned,
# with logits instead of sampling, and without its partial chunk.
# Experiment test ExperimentTest.ReplayFirstPlan appended to
# llm_engine_cuda_test (not committed; bundle .device-s10l).
set -uo pipefail
N=.device-s10l
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
timeout 200 $N/run.sh llm_engine_cuda_test --gtest_filter='ExperimentTest.*' > $O/r/replay.log 2>&1; echo "rc=$?"
grep -hE "^EXP|FAILED|Failure" $O/r/replay.log | cut -c1-330
cd $O && tar czf call14.tgz r && rm -rf r
