#!/bin/bash
# The whole tiny-reasoner pipeline on the GPU machine, in one call:
# tokenizer, training, held-out evaluation with transformers, and the files
# to bring back. Run from anywhere; reads the scripts beside this file.
#
#   OUT=/tmp/out tools/tiny_reasoner/run_device.sh            # full run
#   RECORDS=20000 STEPS=200 LIMIT=64 OUT=... run_device.sh    # smoke run
#
# Writes 8 files into $OUT: train_log.txt, train_loss.tsv, tiny-reasoner.tar
# (the model directory, written as soon as training ends), eval_log.txt,
# eval_bf16.jsonl, eval_fp32.jsonl, eval_summary.json, tokenizer_golden.jsonl.
set -euo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
here=$(cd "$(dirname "$0")" && pwd)
heldout=${HELDOUT:-$here/../../tests/data/tiny_reasoner/heldout.jsonl}
work=${WORK:-/tmp/tiny_reasoner}
out=${OUT:?set OUT}
rm -rf "$work"
mkdir -p "$work/tiny-reasoner" "$out"

{
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
  python3 -c 'import sys, torch, transformers, tokenizers, safetensors; print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "tokenizers", tokenizers.__version__, "safetensors", safetensors.__version__)'
  python3 "$here/train_tokenizer.py" --out "$work/tiny-reasoner"
  # shellcheck disable=SC2086
  python3 "$here/train.py" --out "$work/tiny-reasoner" \
    --records "${RECORDS:-240000}" --steps "${STEPS:-3600}" ${TRAIN_ARGS:-}
} 2>&1 | tee "$out/train_log.txt"
cp "$work/train_loss.tsv" "$out/"
tar -C "$work" -cf "$out/tiny-reasoner.tar" tiny-reasoner
python3 "$here/evaluate.py" --model "$work/tiny-reasoner" --heldout "$heldout" \
  --out "$out" --limit "${LIMIT:-0}" --dtypes "${DTYPES:-bf16,fp32}" \
  --golden "$out/tokenizer_golden.jsonl" 2>&1 | tee "$out/eval_log.txt"
ls -la "$work/tiny-reasoner" "$out"
