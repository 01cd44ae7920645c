#!/usr/bin/env bash
# Session 8, call 8: two skinny-GEMM CTAs per multiprocessor at 64 tokens
# (experiment build .device-s8e5, not committed: the 64-token layout cut to
# two stages, ~101 KB, launch bounds 2; twice the cluster split and 2 x 132
# stream-K CTAs), so that one CTA's epilogue overlaps the other's stream.
# kernels_bench at 64 tokens, base (.device-s8k) and experiment alternated.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in .device-s8k .device-s8e5; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
for tag in base e5 base2 e5b; do
  d=.device-s8k; [[ $tag == e5* ]] && d=.device-s8e5
  timeout 120 $d/run.sh kernels_bench --only gemm --gemm_m 64 > $O/r/gemm_$tag.log 2>&1
  echo "== $tag rc=$? t=$SECONDS"
done
python3 - $O/r <<'PY'
import re,sys
d=sys.argv[1]; files=['gemm_base','gemm_e5','gemm_base2','gemm_e5b']; data={}; keys=[]
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
print('%-8s %3s %-44s'%('','M','')+''.join('%11s'%f[5:] for f in files))
for k in keys: print('%-8s %3d %-44s'%(k[0],k[1],k[2][:44])+''.join('%11s'%data.get((f,k),'') for f in files))
PY
cd $O && tar czf call8.tgz r && rm -rf r
