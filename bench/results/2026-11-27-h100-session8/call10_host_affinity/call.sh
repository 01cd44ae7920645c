#!/usr/bin/env bash
# Session 8, call 10: the host part of a decode step varies 3-6x from one
# process to the next on the same machine (calls 6 and 9: prepare 14-60 us,
# submit 12-86 us). Same binary (.device-s8n), b64, unpinned and pinned to
# single cores (taskset), twice each, with the machine's CPU/NUMA/GPU
# topology.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
d=.device-s8n
[[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d
{ lscpu; numactl --hardware 2>/dev/null; nvidia-smi topo -m; } > $O/r/topology.txt 2>&1
grep -E "Model name|NUMA|MHz|Thread" $O/r/topology.txt | head -12
nvidia-smi topo -m | tail -8
SECONDS=0
step() {  # tag cpu-list ('' = unpinned)
  local pre=""; [[ -n $2 ]] && pre="taskset -c $2"
  $pre $d/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=64 --json=$O/r/step_$1.json > $O/r/step_$1.log 2>&1
  echo "b64 $1 (cpus '$2'): $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"host_[a-z]*_us":[0-9.]*' $O/r/step_$1.json | tr '\n' ' ')"
}
step free1 ""; step c2a 2; step c9a 9; step c2_3a 2,3; step free2 ""; step c2b 2; step c9b 9; step c2_3b 2,3
echo "t=$SECONDS"
cd $O && tar czf call10.tgz r && rm -rf r
