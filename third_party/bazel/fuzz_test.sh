#!/usr/bin/env bash
# Runs a libFuzzer binary with the given flags (see fuzz.bzl), keeps any
# crashing input in the test's undeclared outputs, and prints the number of
# executions. Exits with the fuzzer's status.
set -uo pipefail
bin="$1"
shift
out="${TEST_UNDECLARED_OUTPUTS_DIR:-$(mktemp -d)}"
log="$(mktemp)"
"$bin" -artifact_prefix="$out/" -print_final_stats=1 "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
echo "fuzz executions: ${execs:-0} (exit ${rc})"
rm -f "$log"
exit "$rc"
