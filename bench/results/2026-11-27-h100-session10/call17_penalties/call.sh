#!/usr/bin/env bash
# Session 10, call 17: penalties under pipelined steps (the fed token
# counted in the lists on the device, LaunchCountFedTokens; bundle
# .device-s10n: scripts/device-bundle.sh --xz --out .device-s10n
# //tests/gpu:{cuda_backend,llm_engine_cuda,sampling,cuda_backend_golden,
# shard_sampling_gpu}_test).
set -uo pipefail
N=.device-s10n
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
OUT=$O/r timeout 200 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$?"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:|penalized tokens" $O/r/tests.log | tr -s ' ' | cut -c1-150
rm -f $O/r/bf16ref.tgz
cd $O && tar czf call17.tgz r && rm -rf r
