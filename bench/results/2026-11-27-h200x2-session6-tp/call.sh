#!/usr/bin/env bash
# Session 6, call 8 (nvidia-h100-x2 asked; ran on two H200s): the TP stages on the SwiGLU commit.
# Bundle: scripts/device-bundle.sh --xz --out .device-tp //tests/gpu:tp_group_test //bench:tp_bench //tests/gpu:shard_sampling_gpu_test, plus bench/run_tp_device.sh copied in.
OUT=$OUT bash .device-tp/run_tp_device.sh .device-tp env,dummy7b,golden,sampling,bench 130
