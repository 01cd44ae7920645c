#!/bin/bash
# Runs a Python unittest file with the system python3 and its Debian packages
# (python3-yaml) from the runfiles root (Bazel 4's native py_test stub wants
# an unversioned `python`, which these machines lack).
set -euo pipefail
exec /usr/bin/env python3 "$@"
