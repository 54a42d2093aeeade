#!/usr/bin/env bash
# One GPU lease, one script: the 256x256 Glow timing, then the full bench.
# Usage: bench/gpu_run.sh OUTDIR   (each piece has its own time limit, and
# bench.json is rewritten after every section, so a cut-off run keeps what
# finished).
set -u -o pipefail
out=${1:?usage: bench/gpu_run.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $py -c "import jax; print('jax', jax.__version__, jax.devices())"
  $py -m pip show jax jaxlib jax-cuda13-plugin jax-cuda12-plugin flax optax \
      chex distrax 2>/dev/null | grep -E "^(Name|Version)"
} >"$out/env.txt" 2>&1
cat "$out/env.txt"
$py -c "import mapflow" || exit 3
timeout "${GLOW_S:-170}" $py -m bench.glow256 --steps 10 --out "$out" \
    2>&1 | tee "$out/glow256.log"
timeout "${BENCH_S:-370}" $py -m bench --out "$out" \
    --md "$out/BENCHMARKS_gpu.md" \
    --only throughput,sweep,flops,restarts,training,time_to_quality,scaling,memory \
    2>&1 | tee "$out/bench.log" | grep -v "it/s\]$"
