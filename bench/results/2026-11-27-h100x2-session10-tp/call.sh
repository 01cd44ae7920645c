#!/usr/bin/env bash
# Session 10, TP call: the CUDA backend's Forward now runs as Submit +
# Collect (pipelining itself is off under tensor parallelism); check TP=2 on
# the session's code (7dfc97b; bundle .device-s10tp: scripts/device-bundle.sh
# --xz --out .device-s10tp //tests/gpu:tp_group_test //bench:tp_bench
# //tests/gpu:shard_sampling_gpu_test, plus bench/run_tp_device.sh).
set -uo pipefail
N=.device-s10tp
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
OUT=$O/r timeout 280 bash $N/run_tp_device.sh $N env,dummy7b,golden,sampling,failure,bench 240 > $O/r/stage.log 2>&1; echo "rc=$?"
grep -E "^=== |PASSED|FAILED|TP=2 / TP=1|ratio|decode step" $O/r/tp.log | head -30
cd $O && tar czf tp.tgz r && rm -rf r
