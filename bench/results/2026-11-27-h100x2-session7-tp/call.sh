#!/usr/bin/env bash
# Session 7, call 9 (two GPUs): TP=2 against one GPU after the fused norms
# and greedy candidates (one GPU only; TP keeps the norm kernels).
# Bundle: scripts/device-bundle.sh --xz --out .device-tp7 //tests/gpu:tp_group_test //bench:tp_bench //tests/gpu:shard_sampling_gpu_test, plus bench/run_tp_device.sh copied in.
OUT=$OUT bash .device-tp7/run_tp_device.sh .device-tp7 env,dummy7b,golden,sampling 110
