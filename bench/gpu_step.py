"""One recovery step's time under one set of launch-cutting options.

python -m bench.gpu_step --out DIR [--batch 256] [--chunk 200] [--bf16]
    [--label NAME] [--quick]

Issue #22 asks for a GPU step of the shipped RealNVP at batch 256 in
≤ 2 ms; at 28x28 the step is bound by kernel launches. Each run times the
marginal step of MAP denoising (SINUSOIDAL, s = 0.4, Adam) with the given
steps per dispatch (``--chunk``: one scanned program runs that many) and
layer dtype, and appends one JSON line to ``DIR/gpu_step.jsonl``, with
the mean PSNR after the same steps, so a faster variant that loses
quality shows it. XLA flags (command buffers, i.e. CUDA graphs) are set
by the caller through ``XLA_FLAGS``, before JAX starts: see
``bench/gpu_step.sh``, which runs the variants one process each.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import mapflow as mf
from bench import sections


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m bench.gpu_step",
                              description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--chunk", type=int, default=None,
                 help="steps per dispatch (default: the backend's)")
  p.add_argument("--bf16", action="store_true",
                 help="the flow's layers in bfloat16")
  p.add_argument("--steps", type=int, default=100,
                 help="steps of the PSNR check")
  p.add_argument("--label", default="")
  p.add_argument("--quick", action="store_true",
                 help="a tiny flow and batch: checks the script, not a "
                 "speed figure")
  args = p.parse_args(argv)
  for name in ("batch", "chunk", "steps"):
    v = getattr(args, name)
    if v is not None and v < 1:
      p.error(f"--{name}: got {v}, expected a positive int")
  ctx = sections.Context({"tiny_prior": args.quick})
  prior = (mf.flows.with_compute_dtype(ctx.prior, jnp.bfloat16)
           if args.bf16 else ctx.prior)
  x, op, noise, y = sections.denoise_problem(ctx, args.batch)
  cfg = mf.SolverConfig(chunk=args.chunk, init="measurements",
                        init_range=(0.0, 1.0))
  kw = dict(prior=prior, params=ctx.params, operator=op, noise=noise,
            beta=0.5, optimizer=ctx.optimizer, config=cfg)
  m = sections.marginal_step(lambda k: mf.recover(y, steps=k, **kw).x,
                             10, 2 if args.quick else 3)
  res = mf.recover(y, steps=args.steps, **kw)
  row = {"label": args.label, "backend": jax.default_backend(),
         "device": str(jax.devices()[0].device_kind), "prior": ctx.which,
         "batch": args.batch, "chunk": args.chunk, "bf16": args.bf16,
         "xla_flags": os.environ.get("XLA_FLAGS", ""),
         "s_per_step": m.per, "timed_steps": m.steps,
         "image_steps_per_s": args.batch / m.per,
         "first_call_s": m.first, "compile_s": m.compile,
         "psnr_after_steps": float(jnp.mean(mf.metrics.psnr(x, res.x))),
         "steps": args.steps, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  with open(out / "gpu_step.jsonl", "a") as f:
    f.write(json.dumps(row) + "\n")
  print(json.dumps(row))


if __name__ == "__main__":
  main()
