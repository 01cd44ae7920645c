#!/usr/bin/env bash
# Session 7, call 6: why call 5's greedy-candidate build is 0.1 ms slower at
# b64. Per-kernel durations of one b64 step under ncu (duration only) for
# NEW with the candidates on and off and for BASE, then the step with the
# candidates on and off. NEW = .device-s7e (call 5's build plus
# --greedy_candidates), BASE = .device-s7c (e240d4f).
set -uo pipefail
N=.device-s7e; B=.device-s7c
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $B; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
NCU=/usr/local/cuda/bin/ncu
for d in $N $B; do
  sed 's|^exec |exec '"$NCU"' --profile-from-start off --metrics gpu__time_duration.sum --csv --log-file "$NCU_LOG" |' $d/run.sh > $d/run_ncu.sh
done
args="--prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 --decode_batch=64"
NCU_LOG=$O/r/ncu_new_c1.csv timeout 120 bash $N/run_ncu.sh cuda_backend_bench $args --profile_decode_steps=1 --greedy_candidates=1 > $O/r/ncu_new_c1.log 2>&1; echo "ncu new c1 rc=$?"
NCU_LOG=$O/r/ncu_new_c0.csv timeout 120 bash $N/run_ncu.sh cuda_backend_bench $args --profile_decode_steps=1 --greedy_candidates=0 > $O/r/ncu_new_c0.log 2>&1; echo "ncu new c0 rc=$?"
NCU_LOG=$O/r/ncu_base.csv timeout 120 bash $B/run_ncu.sh cuda_backend_bench $args --profile_decode_steps=1 > $O/r/ncu_base.log 2>&1; echo "ncu base rc=$?"
for c in 1 0 1 0; do
  $N/run.sh cuda_backend_bench $args --greedy_candidates=$c --json=$O/r/step_c$c.json > $O/r/step_c$c.log 2>&1
  echo "b64 cand=$c: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"greedy_candidate_steps":[0-9]*' $O/r/step_c$c.json | tr '\n' ' ')"
done
cd $O && tar czf call6.tgz r && rm -rf r
