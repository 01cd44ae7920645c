#!/usr/bin/env bash
# Session 6, call 1: gemm_test (stream-K off under an MPS share, never run on
# a GPU yet), then where the b64 decode step's time goes in place: an nsys
# timeline of two graph-replayed steps (start/end of every kernel) and ncu
# metrics per kernel (DRAM and L2 throughput, tensor pipe).
set -uo pipefail
B=.device-diag
O=${OUT:-/tmp/out}; mkdir -p $O/r
tar xJf $B/bundle.tar.xz -C $B
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv > $O/r/gpu.txt
$B/run.sh gemm_test --gtest_brief=1 > $O/r/gemm_test.log 2>&1; echo "gemm_test rc=$?"; tail -3 $O/r/gemm_test.log
nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -n1)
echo "nsys: ${nsys:-none}"
args="--prompts=64 --prompt_len=16 --gen_len=2 --budgets=4096 --tune_prefill=0 --repeats=0 --decode_batch=64 --decode_context=1024 --profile_decode_steps=3"
if [[ -n "$nsys" ]]; then
  timeout 240 $nsys profile -t cuda --cuda-graph-trace=node --capture-range=cudaProfilerApi --capture-range-end=stop \
    -o $O/r/step -f true $B/run.sh cuda_backend_bench $args --json=$O/r/nsys_bench.json > $O/r/nsys.log 2>&1; echo "nsys rc=$?"
  $nsys stats -r cuda_gpu_trace -f csv -o $O/r/trace $O/r/step.nsys-rep >> $O/r/nsys.log 2>&1; echo "stats rc=$?"
  ls $O/r; rm -f $O/r/step.sqlite
fi
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
$ncu --query-metrics --chip gh100 > $O/r/metrics_all.txt 2>&1
want="gpu__time_duration.sum dram__throughput.avg.pct_of_peak_sustained_elapsed dram__bytes_read.sum lts__t_bytes.sum lts__throughput.avg.pct_of_peak_sustained_elapsed sm__throughput.avg.pct_of_peak_sustained_elapsed sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_elapsed sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed l1tex__throughput.avg.pct_of_peak_sustained_elapsed"
m=""
for x in $want; do base=${x%%.*}; grep -q "^$base " $O/r/metrics_all.txt && m="$m,$x"; done
m=${m#,}; echo "metrics: $m"
gzip -f $O/r/metrics_all.txt
timeout 300 $ncu --profile-from-start off --graph-profiling node --cache-control none --clock-control none \
  --metrics "$m" --csv --print-units base --log-file $O/r/ncu_b64.csv \
  $B/run.sh cuda_backend_bench ${args/profile_decode_steps=3/profile_decode_steps=1} --json=$O/r/ncu_bench.json > $O/r/ncu.log 2>&1; echo "ncu rc=$?"
gzip -f $O/r/ncu_b64.csv
grep -E "decode step ms|decode step GEMMs" $O/r/nsys.log $O/r/ncu.log | head
cd $O && tar czf diag.tgz r && rm -rf r
