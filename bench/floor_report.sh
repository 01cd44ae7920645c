#!/usr/bin/env bash
# Prints bench/floor.py's floors for the offline workload (64 x 512 -> 128 on
# R1-Distill-Qwen-7B shapes) and the decode step at batch 64, context 1,024,
# with the copy and GEMM ceilings that a cuda_backend_bench --json file
# recorded in the same device call, and with the round ceilings:
#
#   bench/floor_report.sh BENCH_JSON FLOOR_PY
set -euo pipefail
json=$1
floor=$2
read -r bw tf < <(python3 -c '
import json, sys
for l in open(sys.argv[1]):
    j = json.loads(l)
    if j["measure"] == "ceilings":
        print(j["copy_gbs"], j["gemm_tflops"])
' "$json")
echo "== floor.py, offline workload, ceilings of this call: $bw GB/s, $tf TFLOP/s"
python3 "$floor" --model r1-distill-qwen-7b --prompts 64 --prompt-len 512 \
  --gen-len 128 --bandwidth-gbs "$bw" --tflops "$tf"
echo "== the same with the issue's ceilings (3000 GB/s, 790 TFLOP/s)"
python3 "$floor" --model r1-distill-qwen-7b --prompts 64 --prompt-len 512 \
  --gen-len 128 --bandwidth-gbs 3000 --tflops 790
echo "== decode step at batch 64, context 1024 (last line)"
python3 "$floor" --model r1-distill-qwen-7b --prompts 64 --prompt-len 896 \
  --gen-len 128 --bandwidth-gbs "$bw" --tflops "$tf" | tail -n 1
