#!/usr/bin/env bash
# Session 8, call 9: decode-bucket block tables uploaded as the rows' used
# prefixes (CudaBackend::UploadMetadata). The backend tests on the new build
# (.device-s8n), then the b64 decode step at max_model_len 32768 (a
# server's default for the model) base (.device-s8m) and new alternated,
# and at the bench's own max_model_len (1,025) once each.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in .device-s8m .device-s8n; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
for t in cuda_backend_test llm_engine_cuda_test; do
  timeout 200 .device-s8n/run.sh $t > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ') t=$SECONDS"
  grep -E "^\[  FAILED|compact|max_model_len 32768" $O/r/$t.log | head -12
done
step() {  # tag max_model_len
  local d=.device-s8m; [[ $1 == new* ]] && d=.device-s8n
  $d/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=64 --max_model_len=$2 --json=$O/r/step_$1_$2.json > $O/r/step_$1_$2.log 2>&1
  echo "b64 $1 len $2: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"host_[a-z]*_us":[0-9.]*\|"max_model_len":[0-9]*' $O/r/step_$1_$2.json | tr '\n' ' ')"
}
step base 32768; step new 32768; step base2 32768; step new2 32768; step base 0; step new 0
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv | tee $O/r/smi.txt
lscpu | grep -E "Model name|^CPU\(s\)" | tee $O/r/cpu.txt
echo "t=$SECONDS"
cd $O && tar czf call9.tgz r && rm -rf r
