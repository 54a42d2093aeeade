"""Depth vs speed: scanned against unrolled stacking of coupling layers.

python -m bench.depth [--out DIR] [--batch 64] [--repeats 5]

For the CPU preset at K and 2K couplings per scale, both ways, it measures
the compile time and the seconds per ``log_prob`` + gradient step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import mapflow as mf


def measure(cfg, batch: int, repeats: int) -> dict:
  flow = mf.flows.from_config(cfg)
  x = jax.random.uniform(jax.random.PRNGKey(0), (batch,) + cfg.image_shape,
                         minval=0.05, maxval=0.95)
  params = flow.init(jax.random.PRNGKey(1), x)
  fn = jax.jit(jax.value_and_grad(lambda p, x: -jnp.mean(flow.log_prob(p, x))))
  t = time.perf_counter()
  compiled = fn.lower(params, x).compile()
  compile_s = time.perf_counter() - t
  jax.block_until_ready(compiled(params, x))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(compiled(params, x))
    times.append(time.perf_counter() - t)
  return {"compile_s": compile_s, "step_s": statistics.median(times),
          "params": sum(a.size for a in jax.tree_util.tree_leaves(params))}


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m bench.depth")
  p.add_argument("--preset", default="realnvp_fmnist_cpu")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--out", default="bench_out")
  args = p.parse_args(argv)
  base = mf.flows.preset(args.preset)
  k = base.couplings_per_scale
  rows = []
  for depth in (k, 2 * k):
    for scan in (False, True):
      cfg = dataclasses.replace(base, couplings_per_scale=depth,
                                final_couplings=base.final_couplings * depth // k,
                                scan_layers=scan)
      r = measure(cfg, args.batch, args.repeats)
      r.update(depth=depth, scan=scan, backend=jax.default_backend(),
               batch=args.batch)
      rows.append(r)
      print(json.dumps(r), flush=True)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  mf.io.write_json_atomic(out / "depth.json", rows)


if __name__ == "__main__":
  main()
