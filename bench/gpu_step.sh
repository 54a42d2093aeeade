#!/usr/bin/env bash
# Issue #22's GPU step (≤ 2 ms at batch 256, shipped RealNVP): each way to
# cut launches in its own process, one line each in OUTDIR/gpu_step.jsonl.
# Usage: bench/gpu_step.sh OUTDIR   (each run is time-limited; a cut-off
# run loses only its own line).
set -u -o pipefail
out=${1:?usage: bench/gpu_step.sh OUTDIR}
mkdir -p "$out"
py=${PYTHON:-python3}
t=${STEP_S:-90}
run() { label=$1; shift; timeout "$t" "$py" -m bench.gpu_step --out "$out" --label "$label" "$@" || echo "$label: exit $?" >&2; }
run default
run chunk200 --chunk 200
run bf16 --bf16
run bf16_chunk200 --bf16 --chunk 200
# Command buffers (CUDA graphs) around the scanned loop as well as fusions.
XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUDNN,CUSTOM_CALL,WHILE,CONDITIONAL" \
  run cmdbuf_while --chunk 200
XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUDNN,CUSTOM_CALL,WHILE,CONDITIONAL" \
  run cmdbuf_while_bf16 --chunk 200 --bf16
cat "$out/gpu_step.jsonl"
