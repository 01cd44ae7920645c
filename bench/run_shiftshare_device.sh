#!/usr/bin/env bash
# Shifted sharing (helper shiftshare): every GPU test, then the kernel
# benchmark (decode attention + block distance) of this branch and of main,
# alternated on the same card (new, main, new) for the spread.
set -uo pipefail
b=.device-shiftshare
out=${OUT:-/tmp/shiftshare-out}
mkdir -p "$out"
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv; } | tee "$out/tests.log"
fail=0
for t in attention_test block_distance_test gemm_test norm_test qkv_test small_kernels_test sampling_test; do
  echo "=== $t" >> "$out/tests.log"
  s=$(date +%s)
  if ! timeout 240 "$b/run.sh" "$t" >> "$out/tests.log" 2>&1; then echo "FAILED: $t" | tee -a "$out/tests.log"; fail=1; fi
  echo "$t: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]' "$out/tests.log" | tail -n 1) ($(( $(date +%s) - s )) s)"
done
grep -E "FAILED|Failure" "$out/tests.log" | head -20
"$b/run.sh" kernels_bench --only attn,dist > "$out/bench_new.log" 2>&1
"$b/run.sh" kernels_bench_main --only attn,dist > "$out/bench_main.log" 2>&1
"$b/run.sh" kernels_bench --only attn > "$out/bench_new2.log" 2>&1
echo "== new / main / new again (decode: auto split, graph; distance)"
for f in bench_new bench_main bench_new2; do
  echo "-- $f"
  sed -n '/^measurement/,$p' "$out/$f.log" | grep -E "graph|\(auto\)|distance" | sed -E 's/ +/ /g'
done
echo "tests: $([[ $fail == 0 ]] && echo all passed || echo SOME FAILED)"
exit $fail
