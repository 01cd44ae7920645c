#!/usr/bin/env bash
# Session 13: the TP serving path end to end on two H100s with the new defaults (8-token KV blocks,
# numbers kept; 995f0a2): tests/e2e:tp_group_e2e_test (a CUDA TP=2 worker group, its steps pipelined by
# default, a CPU worker, memshare_router in front; rank 1 killed: NOT_SERVING, routed away, exit
# 3). Bundle .device-s13e2e: scripts/device-bundle.sh --xz --out .device-s13e2e
# //tests/e2e:tp_group_e2e_test //engine/server:memshare_worker //router:memshare_router, plus
# bench/run_tp_device.sh.
set -uo pipefail
N=.device-s13e2e
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
SECONDS=0
OUT=$O/r timeout 200 bash $N/run_tp_device.sh $N env,e2e 190 > $O/r/stage.log 2>&1; echo "e2e rc=$? t=$SECONDS"
grep -E "^\[[0-9]+s\]|OK \]|FAILED|Failure|async|pipelin" $O/r/tp.log | head -30
grep -iE "pipelin|async" $O/r/e2e.log | head -5
cd $O && tar czf e2e.tgz r && rm -rf r
