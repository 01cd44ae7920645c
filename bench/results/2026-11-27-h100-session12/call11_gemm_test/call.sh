#!/usr/bin/env bash
# Session 12, call 11: gemm_test after its column-split cases share one helper (WideCtaCounts;
# the same runs and assertions). Bundle .device-s12h: scripts/device-bundle.sh --xz --out
# .device-s12h //tests/gpu:gemm_test.
set -uo pipefail
N=.device-s12h
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
timeout 200 $N/run.sh gemm_test --gtest_brief=1 > $O/r/gemm_test.log 2>&1; echo "gemm_test rc=$?"
grep -E "Tune chose|^\[  PASSED|^\[  FAILED|Failure" $O/r/gemm_test.log | head -20
