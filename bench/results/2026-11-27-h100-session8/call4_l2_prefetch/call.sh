#!/usr/bin/env bash
# Session 8, call 4: each skinny-GEMM CTA asks L2 for P more stages of its own
# W (cp.async.bulk.prefetch.tensor) before it waits for the preceding kernel
# (experiment knob MEMSHARE_SKINNY_L2_PREFETCH=P, build .device-s8p):
# kernels_bench's GEMMs at 1 and 64 tokens and the b64 decode step, P
# alternated.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
d=.device-s8p
[[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d
SECONDS=0
for P in 0 4 8; do
  MEMSHARE_SKINNY_L2_PREFETCH=$P timeout 120 $d/run.sh kernels_bench --only gemm --gemm_m 1,64 > $O/r/gemm_p$P.log 2>&1
  echo "== P=$P rc=$? t=$SECONDS"
done
python3 - $O/r <<'PY'
import re,sys,glob
d=sys.argv[1]; files=['gemm_p0','gemm_p4','gemm_p8']; data={}; keys=[]
for f in files:
    seen=set()
    for line in open(f'{d}/{f}.log'):
        m=re.match(r'gemm (\w+) M=(\d+) N=\d+ K=\d+ (.*?)\s+([\d.]+) us',line)
        if not m: continue
        var=re.sub(r'\(\d+ weight copies, graph\)|\(graph\)','',m.group(3)).strip()
        if 'pdl=0' in var or 'heuristic' in var or var.startswith('tuned ') or 'skinny splits' in var: continue
        k=(m.group(1),int(m.group(2)),var)
        if k in seen: continue
        seen.add(k)
        if k not in keys: keys.append(k)
        data[(f,k)]=float(m.group(4))
for k in keys: print('%-8s %3d %-42s'%(k[0],k[1],k[2][:42])+''.join('%9s'%data.get((f,k),'') for f in files))
PY
step() {  # P tag
  MEMSHARE_SKINNY_L2_PREFETCH=$1 $d/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=64 --graph_step_io=0 --json=$O/r/step_p$1_$2.json > $O/r/step_p$1_$2.log 2>&1
  echo "b64 P=$1: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*' $O/r/step_p$1_$2.json | tr '\n' ' ') | $(grep 'decode step GEMMs at' $O/r/step_p$1_$2.log | tail -1 | cut -c30-200)"
}
step 0 0; step 4 0; step 8 0; step 0 1; step 4 1; step 8 1
echo "t=$SECONDS"
cd $O && tar czf call4.tgz r && rm -rf r
