#!/usr/bin/env bash
# Router overhead: the same load sent to one worker directly (WorkerService)
# and through memshare_router (InferenceService) in front of two workers,
# with the fake engine so that the engine's own time is small and fixed.
# Prints both reports; the overhead is the difference of the end-to-end p50.
#
#   bench/loadgen/router_overhead.sh [requests] [concurrency] [max_tokens] [step_interval]
set -euo pipefail
cd "$(dirname "$0")/../.."
requests=${1:-2000}
concurrency=${2:-1}
max_tokens=${3:-1}
step=${4:-200us}
bazel build //router:memshare_router //engine/server/testing:fake_worker //bench/loadgen:loadgen >&2
bin=bazel-bin
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

port_of() {  # file word -> the port printed after "<word> on port"
  for _ in $(seq 100); do
    if grep -q "$2 on port" "$1" 2>/dev/null; then
      sed -n "s/.*$2 on port \([0-9]*\).*/\1/p" "$1" | head -1
      return
    fi
    sleep 0.1
  done
  echo "no port in $1" >&2; exit 1
}

for i in 0 1; do
  "$bin/engine/server/testing/fake_worker" --address=127.0.0.1:0 --metrics_address= \
      --fake_step_interval="$step" --fake_max_running=64 >"$tmp/w$i.out" 2>"$tmp/w$i.err" &
  pids+=($!)
done
w0=$(port_of "$tmp/w0.out" serving)
w1=$(port_of "$tmp/w1.out" serving)
"$bin/router/memshare_router" --address=127.0.0.1:0 --http_address= --metrics_address= \
    --workers=127.0.0.1:$w0,127.0.0.1:$w1 >"$tmp/r.out" 2>"$tmp/r.err" &
pids+=($!)
r=$(port_of "$tmp/r.out" serving)
sleep 1

common=(--requests="$requests" --concurrency="$concurrency" --max_tokens="$max_tokens" --prompt_bytes=128)
echo "== warm-up" >&2
"$bin/bench/loadgen/loadgen" --target=127.0.0.1:$w0 --api=worker --requests=200 --max_tokens=1 >/dev/null
"$bin/bench/loadgen/loadgen" --target=127.0.0.1:$r --api=router --requests=200 --max_tokens=1 >/dev/null
for round in 1 2; do
  echo "== round $round: worker directly"
  "$bin/bench/loadgen/loadgen" --target=127.0.0.1:$w0 --api=worker "${common[@]}"
  echo "== round $round: through the router (two workers)"
  "$bin/bench/loadgen/loadgen" --target=127.0.0.1:$r --api=router "${common[@]}"
done
