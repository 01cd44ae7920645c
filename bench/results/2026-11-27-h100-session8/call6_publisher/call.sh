#!/usr/bin/env bash
# Session 8, call 6: the stream-K partial's flag raised by a publisher warp
# instead of the consumers (fence off their path). gemm_test on the new
# build, then kernels_bench's GEMMs at 1 and 64 tokens and the b64 decode step,
# base (.device-s8k / .device-s8a: the session's build before the change)
# and new (.device-s8b) alternated.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in .device-s8k .device-s8a .device-s8b; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
timeout 200 .device-s8b/run.sh gemm_test > $O/r/gemm_test.log 2>&1; echo "gemm_test rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/gemm_test.log | tr '\n' ' ') t=$SECONDS"
grep -E "^\[  FAILED" $O/r/gemm_test.log | head
for tag in base new base2 new2; do
  d=.device-s8k; [[ $tag == new* ]] && d=.device-s8b
  timeout 120 $d/run.sh kernels_bench --only gemm --gemm_m 1,64 > $O/r/gemm_$tag.log 2>&1
  echo "== $tag rc=$? t=$SECONDS"
done
python3 - $O/r <<'PY'
import re,sys
d=sys.argv[1]; files=['gemm_base','gemm_new','gemm_base2','gemm_new2']; data={}; keys=[]
for f in files:
    seen=set()
    for line in open(f'{d}/{f}.log'):
        m=re.match(r'gemm (\w+) M=(\d+) N=\d+ K=\d+ (.*?)\s+([\d.]+) us',line)
        if not m: continue
        var=re.sub(r'\(\d+ weight copies, graph\)|\(graph\)','',m.group(3)).strip()
        if 'pdl=0' in var or 'heuristic' in var or var.startswith('tuned ') or 'skinny splits' in var or 'splits=2' in var or 'splits=1 ' in var: continue
        k=(m.group(1),int(m.group(2)),var)
        if k in seen: continue
        seen.add(k)
        if k not in keys: keys.append(k)
        data[(f,k)]=float(m.group(4))
print('%-8s %3s %-42s'%('','M','')+''.join('%11s'%f[5:] for f in files))
for k in keys: print('%-8s %3d %-42s'%(k[0],k[1],k[2][:42])+''.join('%11s'%data.get((f,k),'') for f in files))
PY
step() {  # tag
  local d=.device-s8a; [[ $1 == new* ]] && d=.device-s8b
  $d/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=64 --graph_step_io=0 --json=$O/r/step_$1.json > $O/r/step_$1.log 2>&1
  echo "b64 $1: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"host_[a-z]*_us":[0-9.]*' $O/r/step_$1.json | tr '\n' ' ') | $(grep 'decode step GEMMs at' $O/r/step_$1.log | tail -1 | cut -c30-200)"
}
step base; step new; step base2; step new2
echo "t=$SECONDS"
cd $O && tar czf call6.tgz r && rm -rf r
