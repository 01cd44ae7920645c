#!/usr/bin/env bash
# Session 8, call 13: cuda_backend_test on the last commit (485dca0: the
# tables' offsets in a fixed array; bundle .device-s8y). Output (kept in the
# notes): "[==========] 45 tests from 7 test suites ran. (10376 ms total)",
# "[  PASSED  ] 45 tests.", the eight LongMaxModelLen cases among them.
d=.device-s8y; [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; timeout 120 $d/run.sh cuda_backend_test > /tmp/t.log 2>&1; echo "rc=$?"; grep -E "^\[  (PASSED|FAILED)|^\[==========\]" /tmp/t.log
