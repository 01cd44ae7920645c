#!/usr/bin/env bash
# The README's main command: installs the dependencies, builds, and runs the
# demo (one router and two workers on the CPU backend with the bundled tiny
# reasoning model; one request through the public gRPC API, streamed; the KV
# statistics; everything stopped at the end). Extra arguments go to the demo
# (`scripts/demo.sh --help` lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec bazel run //tools/demo -- "$@"
