set -u
B=.device-final; O=$OUT
tar xJf $B/bundle.tar.xz -C $B
mkdir -p $O/r
OUT=$O/r bash $B/run_cuda_backend_device.sh $B tests,bench,peer --budgets=16384 --tune_prefill=2 --repeats=3 > $O/r/final.log 2>&1; echo "final rc $?"
for b in 16 1; do $B/run.sh cuda_backend_bench --prompts=$b --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 --decode_batch=$b --json=$O/r/b$b.json > $O/r/b$b.log 2>&1; echo "b$b: $(grep -E 'decode step ms \(batch' $O/r/b$b.log | tr -s ' ') | $(grep 'decode step GEMMs' $O/r/b$b.log)"; done
grep -E "^=== |PASSED|FAILED" $O/r/tests.log | paste - - | tr -s ' '
grep -E "throughput seconds|decode step ms|pure decode|floor|decode step GEMMs" $O/r/final.log | grep -v '^{'
grep -E "static|tok/s" $O/r/peer.log | tail -3
tar czf $O/final.tgz -C $O r && rm -rf $O/r
