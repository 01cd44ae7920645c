#!/usr/bin/env bash
# The MemShare evaluation of issue 8 on the CUDA backend, on one GPU, in one
# device call. From the repository root, with the bundle made by
#   scripts/device-bundle.sh --out BUNDLE //bench/memshare_eval:memshare_eval
# and this script copied into BUNDLE:
#
#   bash BUNDLE/run_memshare_eval_device.sh BUNDLE [STAGES]
#
# STAGES, comma-separated (default sweep,pressure):
#   sweep     the 600 held-out problems, pool large enough for all of them:
#             MemShare off, the server default, and the configurations
#             around it (MEMSHARE_SWEEP overrides them)
#   pressure  the same problems with pools of MEMSHARE_PRESSURE_BLOCKS
#             (default "480 640 800") blocks, which bound the batch: off vs
#             the default, MEMSHARE_PRESSURE_REPEATS (default 3) interleaved
#             repeats each, without conservative admission (the default)
#             and with it (--admission_reserve 0.2); MEMSHARE_PRESSURE_RESERVES
# $OUT gets summary.log (the tables) and memshare_eval.tgz (every CSV, SVG
# and log), so that the outputs stay within the files a call returns.
set -uo pipefail
bundle=$1
stages=${2:-sweep,pressure}
out=${OUT:-/tmp/memshare-eval-out}
work=$(mktemp -d)
mkdir -p "$out"
has() { [[ ",$stages," == *",$1,"* ]]; }
summary="$out/summary.log"
{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv
} | tee "$summary"
eval_run() {  # NAME ARGS...
  local name=$1 rc
  shift
  echo "== $name: memshare_eval --device=cuda --problems=600 --max_num_seqs=64 $*" | tee -a "$summary"
  "$bundle/run.sh" memshare_eval --device=cuda --problems=600 --max_num_seqs=64 \
    --out="$work/$name" "$@" >"$work/$name.log" 2>&1
  rc=$?
  sed -n '/^config /,$p' "$work/$name.log" | tee -a "$summary"
  ((rc != 0)) && { echo "exit $rc" | tee -a "$summary"; tail -n 5 "$work/$name.log" | tee -a "$summary"; }
}
sweep_default="memshare=off; name=default memshare=on;
  name=kv0.5 tau_kv=0.5; name=kv0.7 tau_kv=0.7; name=kv0.85 tau_kv=0.85; name=kv1.2 tau_kv=1.2;
  name=ov0.625 overlap=0.625; name=ov0.75 overlap=0.75;
  name=delay32 near_delay=32; name=delay64 near_delay=64;
  name=step16 min_step=16; name=step48-64 min_step=48 max_step=64; name=step-unbounded max_step=0;
  name=lex0.2 tau_lex=0.2; name=cand4 candidates=4; name=grid-only shifted=off;
  name=deep-half groups=2 share=1; name=shallow-half groups=2 share=0; name=groups8 groups=8"
if has sweep; then
  eval_run sweep --num_blocks=0 --configs="${MEMSHARE_SWEEP:-$sweep_default}"
fi
if has pressure; then
  for nb in ${MEMSHARE_PRESSURE_BLOCKS:-480 640 800}; do
    for reserve in ${MEMSHARE_PRESSURE_RESERVES:-0 0.2}; do
      eval_run "pressure${nb}_reserve$reserve" --num_blocks="$nb" --admission_reserve="$reserve" \
        --repeats="${MEMSHARE_PRESSURE_REPEATS:-3}" --configs="memshare=off; name=default memshare=on"
    done
  done
fi
tar czf "$out/memshare_eval.tgz" -C "$work" .
echo "done" | tee -a "$summary"
