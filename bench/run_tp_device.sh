#!/usr/bin/env bash
# Tensor parallelism on a GPU machine with two or four GPUs (issue 7), in
# one call: runs from the repository root with the bundle made by
#   scripts/device-bundle.sh --out BUNDLE //tests/gpu:tp_group_test //bench:tp_bench \
#     //tests/e2e:tp_group_e2e_test //engine/server:memshare_worker //router:memshare_router \
#     //tests/gpu:shard_sampling_gpu_test
# and this script copied into BUNDLE:
#
#   bash BUNDLE/run_tp_device.sh BUNDLE [STAGES] [DEADLINE_S]
#
# STAGES, comma-separated, run in this order (default all):
#   env      the cards, the link between them (nvidia-smi topo), NCCL's libs
#   dummy7b  tests/gpu:tp_group_test, TP=2 (and TP=4 with four GPUs) vs one
#            GPU on R1-Distill-Qwen-7B shapes (dummy weights)
#   golden   the same on the five golden checkpoints
#   sampling greedy sampling on vocabulary shards: tests/gpu:
#            shard_sampling_gpu_test (one GPU) and tp_group_test's
#            TpShardSamplingTest (TP=2, TP=4 with four GPUs) and
#            TpPipelineTest (pipelined steps, TP=2)
#   bench    bench:tp_bench: R1-Distill-Qwen-7B decode step at batch 64, TP=1
#            then TP=2 (two processes) with the default fast paths (plan
#            through shared memory, fused one-shot all-reduce pushing into
#            the peer, greedy sampling on the vocabulary shards), then the
#            same with the logits all-gathered (MEMSHARE_TP_SAMPLE=gather,
#            the sampling of run 2), then all-reduce oneshot, nccl, and the
#            old path (plan and all-reduce over NCCL, logits all-gathered);
#            NCCL all-reduce bandwidth, the candidates' exchange and one
#            step's collectives measured by the first
#   failure  tp_group_test: kill rank 1, then rank 0, mid-run
#   e2e      tests/e2e:tp_group_e2e_test (router + group + CPU worker; kill a
#            rank: NOT_SERVING, routed away, exit 3)
#   qwq      bench:tp_bench on QwQ-32B shapes at TP=2 (if time is left)
#   tp4      (four GPUs) bench:tp_bench at TP=4, four processes: the 7B with
#            the default paths (and the collectives' measurements), with
#            NCCL all-reduces, and with NCCL all-reduces and the logits
#            all-gathered (TP=4 before the 4-rank one-shot); QwQ-32B default
#   flags    MEMSHARE_TP_ONESHOT=push (bf16 sums with flags, not the Lamport
#            staging that is the default): the
#            dummy-7B and shard-sampling tests; with bench, tp4 and qwq also
#            their decode steps
#   repeat   TP=1 and TP=2 (default, flags) once more at the end
#   memshare (one GPU) bench/memshare_eval on the CUDA backend: the tiny
#            reasoner's held-out set with MemShare off and at its default,
#            without and with a KV pool that bounds the batch (needs
#            bench/memshare_eval:memshare_eval in the bundle; files
#            memshare*.csv, memshare*.log)
# Every stage has its own time limit and no stage starts after DEADLINE_S
# (default 145) seconds, or with too little time left. NVLink multicast stays off in
# every process (NCCL_NVLS_ENABLE=0 and the PyTorch/NVSHMEM equivalents).
# Files under $OUT: tp.log (everything), tests.log, bench.json,
# bench_rank1.log (every TP=2 run's rank 1), tp_followers.log (TP=4 ranks 1-3),
# e2e.log.
set -uo pipefail
bundle=$1
stages=${2:-env,dummy7b,golden,sampling,bench,failure,e2e,qwq}  # tp4, memshare: only when named
deadline=${3:-145}
out=${OUT:-/tmp/tp-out}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export MEMSHARE_GOLDEN_DIR=tests/data/golden
start=$(date +%s)
log="$out/tp.log"
has() { [[ ",$stages," == *",$1,"* ]]; }
left() { echo $((deadline - ($(date +%s) - start))); }
# limit CAP: the smaller of CAP and what is left before the deadline.
limit() {
  local l
  l=$(left)
  ((l < $1)) && echo "$l" || echo "$1"
}
say() { echo "[$(($(date +%s) - start))s] $*" | tee -a "$log"; }
fail=0

if has env; then
  {
    date -u +"date %Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.sm,clocks.max.sm \
      --format=csv
    nvidia-smi topo -m
    python3 -c 'import nvidia, glob, os; print("nccl libs:", glob.glob(os.path.join(os.path.dirname(nvidia.__path__[0]), "nvidia/nccl/lib/*")))' 2>&1
    echo "NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE"
  } 2>&1 | tee -a "$log"
fi

# run_tests NAME FILTER CAP: one run of tp_group_test (separate runs, so
# that a hang in one leaves the others' results), appended to tests.log.
run_tests() {
  local name=$1 filter=$2 cap=$3 rc
  say "$name: tp_group_test --gtest_filter=$filter (limit $(limit "$cap")s)"
  echo "===== $name" >>"$out/tests.log"
  timeout -k 5 "$(limit "$cap")" "$bundle/run.sh" tp_group_test --gtest_filter="$filter" \
    >>"$out/tests.log" 2>&1
  rc=$?
  say "$name: exit $rc"
  ((rc != 0)) && fail=1
  # A failure around graph capture with NCCL inside: the same test eagerly,
  # to tell the two apart.
  if ((rc != 0)) && [[ $name != failure ]] && grep -qi "capture" "$out/tests.log" &&
    [[ ! -f "$out/tests_nograph.log" ]] && (($(left) > 70)); then
    say "$name: again without CUDA graphs"
    MEMSHARE_TP_NO_GRAPHS=1 timeout -k 5 "$(limit 40)" "$bundle/run.sh" tp_group_test \
      --gtest_filter="$filter" >"$out/tests_nograph.log" 2>&1
    say "$name (no graphs): exit $?"
    grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]|OK \]" "$out/tests_nograph.log" | tee -a "$log"
  fi
  sed -n "/^===== $name\$/,\$p" "$out/tests.log" |
    grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]|OK \]|SKIPPED|TP=[0-9]|distance|decisions|killed|divergence|Failure|Expected|Which is|tp_child|memshare: rank|NCCL WARN" |
    head -n 80 | tee -a "$log"
}

if has dummy7b && (($(left) > 20)); then run_tests dummy7b "TpDummy7BTest*" 50; fi
if has golden && (($(left) > 20)); then run_tests golden "*TpGoldenTest*" 60; fi
if has sampling && (($(left) > 20)); then
  say "sampling: shard_sampling_gpu_test (limit $(limit 30)s)"
  echo "===== sampling_gpu" >>"$out/tests.log"
  timeout -k 5 "$(limit 30)" "$bundle/run.sh" shard_sampling_gpu_test >>"$out/tests.log" 2>&1
  rc=$?
  say "sampling_gpu: exit $rc"
  ((rc != 0)) && fail=1
  run_tests sampling "TpShardSamplingTest*:TpPipelineTest*" 90
fi
if has flags && (($(left) > 30)); then
  MEMSHARE_TP_ONESHOT=push run_tests flags "TpDummy7BTest*:TpShardSamplingTest*" 60
fi

# tp2 NAME PORT COLLECTIVES [ENV...]: one TP=2 bench run (two processes)
# with the given environment, e.g. MEMSHARE_TP_ALLREDUCE=nccl.
tp2() {
  local name=$1 port=$2 coll=$3 l r1
  shift 3
  say "bench: TP=2 $name (${*:-defaults}) (limit $(limit 40)s)"
  l=$(limit 40)
  echo "===== $name" >>"$out/bench_rank1.log"
  env "$@" timeout -k 5 "$l" "$bundle/run.sh" tp_bench --tp=2 --rank=1 --port="$port" \
    --collectives="$coll" >>"$out/bench_rank1.log" 2>&1 &
  r1=$!
  env "$@" timeout -k 5 "$l" "$bundle/run.sh" tp_bench --tp=2 --rank=0 --port="$port" \
    --collectives="$coll" --json="$out/bench.json" 2>&1 | tee -a "$log"
  wait "$r1"
  say "bench: rank 1 exit $?"
  tail -n 1 "$out/bench_rank1.log" | tee -a "$log"
}

if has bench && (($(left) > 25)); then
  say "bench: TP=1 (limit $(limit 30)s)"
  timeout -k 5 "$(limit 30)" "$bundle/run.sh" tp_bench --tp=1 --json="$out/bench.json" 2>&1 |
    tee -a "$log"
  # The default (shared-memory plan, fused one-shot all-reduce) with the
  # collectives' measurements, then each fast path taken away in turn.
  tp2 fused 29611 1
  (($(left) > 25)) && tp2 flags 29618 1 MEMSHARE_TP_ONESHOT=push
  (($(left) > 25)) && tp2 gather 29615 0 MEMSHARE_TP_SAMPLE=gather
  (($(left) > 25)) && tp2 oneshot 29612 0 MEMSHARE_TP_ALLREDUCE=oneshot
  (($(left) > 25)) && tp2 shm_nccl 29613 0 MEMSHARE_TP_ALLREDUCE=nccl
  (($(left) > 25)) && tp2 baseline 29614 0 MEMSHARE_TP_ALLREDUCE=nccl MEMSHARE_TP_PLAN=nccl \
    MEMSHARE_TP_SAMPLE=gather
fi

if has failure && (($(left) > 20)); then
  NCCL_DEBUG=WARN run_tests failure "TpFailureTest*" 30
fi

if has e2e && (($(left) > 25)); then
  say "e2e: tp_group_e2e_test (limit $(limit 40)s)"
  MEMSHARE_TP_E2E_BIN_DIR="$bundle/bin" timeout -k 5 "$(limit 40)" "$bundle/run.sh" \
    tp_group_e2e_test >"$out/e2e.log" 2>&1
  rc=$?
  say "e2e: exit $rc"
  ((rc != 0)) && fail=1
  grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]|OK \]|killed|Failure|Expected|Which is|memshare_worker: (rank|engine|stopping|group)" \
    "$out/e2e.log" | head -n 60 | tee -a "$log"
fi

if has qwq && (($(left) > 25)); then
  say "qwq: QwQ-32B TP=2 (limit $(limit 35)s)"
  l=$(limit 35)
  timeout -k 5 "$l" "$bundle/run.sh" tp_bench --model=qwq-32b --tp=2 --rank=1 --port=29612 \
    --collectives=0 --steps=30 >>"$out/bench_rank1.log" 2>&1 &
  r1=$!
  timeout -k 5 "$l" "$bundle/run.sh" tp_bench --model=qwq-32b --tp=2 --rank=0 --port=29612 \
    --collectives=0 --steps=30 --json="$out/bench.json" 2>&1 | tee -a "$log"
  wait "$r1"
  say "qwq: rank 1 exit $?"
fi

# tp_n MODEL N PORT CAP COLLECTIVES [ENV...]: tp_bench at TP=N, N
# processes (rank 0 in front), with the given environment; the followers'
# output goes to tp_followers.log.
tp_n() {
  local model=$1 n=$2 port=$3 cap=$4 coll=$5 l pids=() r
  shift 5
  say "tp$n: $model TP=$n (${*:-defaults}) (limit $(limit "$cap")s)"
  l=$(limit "$cap")
  echo "===== $model TP=$n ${*:-defaults}" >>"$out/tp_followers.log"
  for ((r = 1; r < n; ++r)); do
    env "$@" timeout -k 5 "$l" "$bundle/run.sh" tp_bench --model="$model" --tp="$n" --rank=$r \
      --port="$port" --collectives="$coll" --steps=30 >>"$out/tp_followers.log" 2>&1 &
    pids+=($!)
  done
  env "$@" timeout -k 5 "$l" "$bundle/run.sh" tp_bench --model="$model" --tp="$n" --rank=0 \
    --port="$port" --collectives="$coll" --steps=30 --json="$out/bench.json" 2>&1 | tee -a "$log"
  for r in "${pids[@]}"; do wait "$r" || say "tp$n: a follower exited $?"; done
}

if has tp4 && (($(left) > 40)); then
  if (($(nvidia-smi -L | wc -l) >= 4)); then
    tp_n r1-7b 4 29613 45 1
    (($(left) > 40)) && tp_n r1-7b 4 29618 40 1 MEMSHARE_TP_ONESHOT=push
    (($(left) > 40)) && tp_n r1-7b 4 29616 40 0 MEMSHARE_TP_ALLREDUCE=nccl
    (($(left) > 40)) && tp_n r1-7b 4 29617 40 0 MEMSHARE_TP_ALLREDUCE=nccl MEMSHARE_TP_SAMPLE=gather
    (($(left) > 40)) && tp_n qwq-32b 4 29614 50 0
    (($(left) > 40)) && tp_n qwq-32b 4 29619 50 0 MEMSHARE_TP_ONESHOT=push
  else
    say "tp4: fewer than four GPUs, skipped"
  fi
fi

if has qwq && has flags && (($(left) > 30)); then
  say "qwq: QwQ-32B TP=2 flags (limit $(limit 35)s)"
  l=$(limit 35)
  MEMSHARE_TP_ONESHOT=push timeout -k 5 "$l" "$bundle/run.sh" tp_bench --model=qwq-32b --tp=2 \
    --rank=1 --port=29620 --collectives=0 --steps=30 >>"$out/bench_rank1.log" 2>&1 &
  r1=$!
  MEMSHARE_TP_ONESHOT=push timeout -k 5 "$l" "$bundle/run.sh" tp_bench --model=qwq-32b --tp=2 \
    --rank=0 --port=29620 --collectives=0 --steps=30 --json="$out/bench.json" 2>&1 | tee -a "$log"
  wait "$r1"
  say "qwq flags: rank 1 exit $?"
fi

# repeat: TP=1 and the default TP=2 again at the end (the spread of the ratio).
if has repeat && (($(left) > 25)); then
  say "repeat: TP=1 (limit $(limit 30)s)"
  timeout -k 5 "$(limit 30)" "$bundle/run.sh" tp_bench --tp=1 --json="$out/bench.json" 2>&1 |
    tee -a "$log"
  (($(left) > 20)) && tp2 fused_again 29621 0
  (($(left) > 20)) && tp2 flags_again 29622 0 MEMSHARE_TP_ONESHOT=push
fi

if has memshare && (($(left) > 60)); then
  # 600 held-out problems; the default configuration (bench/RESULTS.md, issue 8).
  # First without memory pressure (accuracy, memory saved), then with a pool
  # that bounds the batch (throughput, two interleaved repeats). The GPU:
  # MEMSHARE_EVAL_GPU (default 0), so that it can run beside a TP stage.
  # MEMSHARE_EVAL_CONFIGS and MEMSHARE_EVAL_REPEATS (of the pressure run)
  # override the configurations and repeats.
  cfg=${MEMSHARE_EVAL_CONFIGS:-"memshare=off; name=default memshare=on"}
  for nb in 0 ${MEMSHARE_EVAL_BLOCKS:-640}; do
    reps=$((nb == 0 ? 1 : ${MEMSHARE_EVAL_REPEATS:-2}))
    say "memshare: memshare_eval --device=cuda --num_blocks=$nb --repeats=$reps (limit $(limit 300)s)"
    CUDA_VISIBLE_DEVICES=${MEMSHARE_EVAL_GPU:-0} timeout -k 5 "$(limit 300)" "$bundle/run.sh" \
      memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --num_blocks=$nb \
      --repeats=$reps --configs="$cfg" --out="$out/memshare_nb$nb" >"$out/memshare_nb$nb.log" 2>&1
    say "memshare nb=$nb: exit $?"
    tail -n 8 "$out/memshare_nb$nb.log" | tee -a "$log"
  done
fi

if [[ -f "$out/bench.json" ]]; then
  python3 - "$out/bench.json" <<'PY' 2>&1 | tee -a "$log"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
steps = [r for r in rows if r["measure"] == "decode_step"]
print("== decode step, batch 64, context 1024 (median of the timed steps)")
one = next((r for r in steps if r["model"] == "r1-7b" and r["tp"] == 1), None)
ones = [r["median_ms"] for r in steps if r["model"] == "r1-7b" and r["tp"] == 1]
if len(ones) > 1:
    print("  TP=1 runs: " + ", ".join(f"{t:.3f}" for t in ones) + " ms (ratios below: the first)")
for r in steps:
    paths = f" plan {r['plan']}, all-reduce {r['allreduce']}, sampling {r.get('sample', 'gather')}" if "plan" in r else ""
    ratio = f", {r['tok_per_s'] / one['tok_per_s']:.2f}x TP=1" if one and r["model"] == "r1-7b" and r["tp"] > 1 else ""
    print(f"  {r['model']:8s} TP={r['tp']}{paths}: {r['median_ms']:.3f} ms ({r['median_gpu_ms']:.3f} ms device), "
          f"{r['tok_per_s']:.0f} tok/s, graph steps {r['graph_steps']}{ratio}")
q2, q4 = (next((r for r in steps if r["model"] == "qwq-32b" and r["tp"] == n), None) for n in (2, 4))
if q2 and q4:
    print(f"  QwQ-32B TP=4 / TP=2 decode throughput: {q4['tok_per_s'] / q2['tok_per_s']:.2f}x")
for r in rows:
    if r["measure"] == "nccl_allreduce":
        print(f"  TP={r['tp']} NCCL all-reduce {r['bytes']} B: {r['us']:.1f} us, bus bandwidth {r['busbw_gbs']:.1f} GB/s")
    if r["measure"] == "candidates_max":
        print(f"  TP={r['tp']} greedy candidates' maximum ({r['rows']} rows, {r['path']}), eager: {r['us']:.1f} us")
    if r["measure"] == "oneshot_allreduce":
        how = "lamport" if r.get("lamport", False) else ("push" if r.get("push", False) else "pull")
        print(f"  TP={r['tp']} one-shot all-reduce {r['bytes']} B ({how}), eager: {r['us']:.1f} us")
    if r["measure"] == "step_collectives":
        what = "+ logits all-gather" if r["logits_allgather"] else "all-reduces only"
        print(f"  TP={r['tp']} one decode step's collectives, {r.get('allreduce', 'nccl')} ({r['allreduces']} all-reduces of {r['allreduce_bytes']} B {what}): {r['median_us']:.0f} us")
PY
fi
say "done, fail=$fail"
exit $fail
