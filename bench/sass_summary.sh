#!/usr/bin/env bash
# Instruction histogram of the paged decode attention kernel (head_dim 128)
# in a bundled binary: checks the 16-byte async copies, ldmatrix and HMMA are
# there and nothing spills (LDL/STL). Needs cuobjdump (the GPU machine has it).
#   bench/sass_summary.sh .device-cudakernels/bin/kernels_bench
set -euo pipefail
cuobjdump -sass "$1" | awk '/Function : .*PagedDecodeKernelILi128ELi3ELb0ELb0/{f=1;next} /Function :/{f=0} f' |
  grep -oE '^\s+/\*[0-9a-f]{4}\*/\s+[A-Z0-9_]+(\.[A-Z0-9_.]+)?' | awk '{print $2}' |
  sed -E 's/^(LDGSTS[^ ]*|LDSM[^ ]*|HMMA[^ ]*|MUFU[^ ]*).*/\1/; s/^([A-Z0-9_]+)\..*/\1/' |
  sort | uniq -c | sort -rn | head -30
