#!/usr/bin/env bash
# Session 11, TP call: early dependents on gate/up and down and Tune without
# several-wave cluster splits where stream-K runs (gate/up shards of 148 tiles); TP=2 on
# the session's code (bundle .device-s11tp: scripts/device-bundle.sh
# --xz --out .device-s11tp //tests/gpu:tp_group_test //bench:tp_bench
# //tests/gpu:shard_sampling_gpu_test, plus bench/run_tp_device.sh).
set -uo pipefail
N=.device-s11tp
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
OUT=$O/r timeout 280 bash $N/run_tp_device.sh $N env,dummy7b,golden,sampling,failure,bench 240 > $O/r/stage.log 2>&1; echo "rc=$?"
grep -E "^=== |PASSED|FAILED|TP=2 / TP=1|ratio|decode step" $O/r/tp.log | head -30
cd $O && tar czf tp.tgz r && rm -rf r
