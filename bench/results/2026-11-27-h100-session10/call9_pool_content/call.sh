#!/usr/bin/env bash
# Session 10, call 9: do greedy runs of the tiny reasoner (12 requests, 120
# tokens, one by one) on one backend depend on the KV pool's stale content,
# or differ with identical content? Experiment test ExperimentTest.PoolContent
# appended to llm_engine_cuda_test (not committed; bundle .device-s10h):
# a fresh backend's run, then runs after filling the pools with zeros
# (twice), with random values (two seeds), and zeros again.
set -uo pipefail
N=.device-s10h
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
timeout 200 $N/run.sh llm_engine_cuda_test --gtest_filter='ExperimentTest.*' > $O/r/pool.log 2>&1; echo "rc=$?"
grep -E "^EXP" $O/r/pool.log
cd $O && tar czf call9.tgz r && rm -rf r
