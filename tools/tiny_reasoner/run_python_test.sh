#!/bin/bash
# Runs a Python unittest file with the system python3 (Bazel 4's native
# py_test stub wants an unversioned `python`, which this machine lacks).
set -euo pipefail
exec python3 "$@"
