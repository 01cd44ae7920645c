#!/usr/bin/env bash
# Session 7, call 3: per-kernel durations of one b64 decode step (graph
# replay) under ncu, duration metric only (each kernel alone, so no PDL
# overlap: what each kernel costs by itself). Bundle .device-s7b = the
# fused-norm commit's cuda_backend_bench.
set -uo pipefail
N=.device-s7b
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
which ncu || ls /usr/local/cuda*/bin/ncu
NCU=$(which ncu || ls /usr/local/cuda*/bin/ncu | head -1)
sed -i 's|^exec |exec '"$NCU"' --profile-from-start off --metrics gpu__time_duration.sum --csv --log-file '"$O"'/r/ncu.csv |' $N/run.sh
grep -n "exec" $N/run.sh
timeout 240 $N/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
  --decode_batch=64 --profile_decode_steps=1 > $O/r/bench.log 2>&1; echo "rc=$?"
tail -3 $O/r/bench.log
wc -l $O/r/ncu.csv
cd $O && tar czf call3.tgz r && rm -rf r
