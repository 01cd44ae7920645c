#!/usr/bin/env bash
# Session 6, call 6: gemm_test with the corrected wrapper case, then the
# offline workload, the decode step and the peer on the SwiGLU build.
set -uo pipefail
N=.device-new; G=.device-g
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $G; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
$G/run.sh gemm_test > $O/r/gemm_test.log 2>&1; echo "gemm_test rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/gemm_test.log | tr '\n' ' ')"
OUT=$O/r timeout 500 bash $N/run_cuda_backend_device.sh $N bench,peer --budgets=16384 --tune_prefill=2 --repeats=3 > $O/r/final.log 2>&1; echo "final rc $?"
grep -E "throughput seconds|decode step ms|pure decode|floor|decode step GEMMs" $O/r/final.log | grep -v '^{' | cut -c1-200
grep -E "static|tok/s" $O/r/peer.log | tail -4
cd $O && tar czf callB.tgz r && rm -rf r
