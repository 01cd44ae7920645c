#!/bin/sh
# Runs the CUDA toolkit's nvcc. A wrapper so that BUILD files name the
# compiler by label and a missing toolkit gives a clear message.
NVCC="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"
[ -x "$NVCC" ] || { echo "nvcc not found at $NVCC: install the CUDA toolkit under /usr/local/cuda" >&2; exit 1; }
exec "$NVCC" "$@"
