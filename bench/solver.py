"""Solver throughput: recovery steps/s by batch, and a β x m sweep as one
call against the same work as sequential calls.

python -m bench.solver [--out DIR] [--steps 10] [--sweep-steps 20]

Uses the shipped Fashion-MNIST prior when present, else random params of
the same preset (the speed is the same; the images are not).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import mapflow as mf


def _prior():
  try:
    prior, params = mf.pretrained.load("fashion_mnist_realnvp")
    return prior, params, "shipped"
  except ValueError:
    cfg = mf.flows.preset("realnvp_fmnist_cpu")
    prior = mf.flows.realnvp(cfg)
    x = jax.random.uniform(jax.random.PRNGKey(0), (8,) + cfg.image_shape)
    return prior, prior.init(jax.random.PRNGKey(1), x), "random"


def one_bit_problem(prior, params, batch, m, key):
  shape = prior.config.image_shape
  x = prior.sample(params, key, batch, 0.7)
  op = mf.operators.one_bit(mf.operators.gaussian(key, m, shape), 0.5)
  noise = mf.noise.sinusoidal_1d(m, 1.0)
  y = op(x) + noise.sample(seed=jax.random.fold_in(key, 1),
                           sample_shape=(batch,))
  return op, noise, y


def time_recover(prior, params, batch, steps, opt):
  op, noise, y = one_bit_problem(prior, params, batch, 784,
                                 jax.random.PRNGKey(batch))
  kw = dict(prior=prior, params=params, operator=op, noise=noise, beta=0.1,
            optimizer=opt)
  t = time.perf_counter()
  jax.block_until_ready(mf.recover(y, steps=1, **kw).x)
  first = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(mf.recover(y, steps=steps, **kw).x)
  dt = time.perf_counter() - t
  return {"batch": batch, "steps": steps, "steps_per_s": steps / dt,
          "s_per_step": dt / steps, "first_call_s": first}


def time_loop_modes(prior, params, batch, steps, opt, chunk):
  """A Python loop over one jitted step against ``chunk`` steps per scan."""
  op, noise, y = one_bit_problem(prior, params, batch, 784,
                                 jax.random.PRNGKey(3))
  kw = dict(prior=prior, params=params, operator=op, noise=noise, beta=0.1,
            optimizer=opt)
  out = {"batch": batch, "steps": steps, "chunk": chunk}
  for name, c in (("python_loop", 1), ("scanned", chunk)):
    jax.block_until_ready(mf.recover(y, steps=c, chunk=c, **kw).x)
    t = time.perf_counter()
    jax.block_until_ready(mf.recover(y, steps=steps, chunk=c, **kw).x)
    out[f"{name}_s_per_step"] = (time.perf_counter() - t) / steps
  return out


def time_sweep(prior, params, steps, opt, n=16):
  betas = jnp.array([0.1, 0.5, 1.0, 5.0, 10.0])
  ms = jnp.array([100, 200, 400, 800, 1600, 3200])
  op, noise, y = one_bit_problem(prior, params, n, 3200,
                                 jax.random.PRNGKey(7))
  kw = dict(prior=prior, params=params, noise=noise, optimizer=opt)
  t = time.perf_counter()
  jax.block_until_ready(mf.sweep(y, operator=op, betas=betas, ms=ms, steps=1,
                                 **kw).x)
  compile_sweep = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(mf.sweep(y, operator=op, betas=betas, ms=ms,
                                 steps=steps, **kw).x)
  sweep_s = time.perf_counter() - t
  one = lambda b, m, s: mf.recover(y, operator=mf.operators.with_active(op, m),
                                   beta=b, steps=s, **kw).x
  t = time.perf_counter()
  jax.block_until_ready(one(betas[0], ms[0], 1))
  compile_seq = time.perf_counter() - t
  t = time.perf_counter()
  for b in betas:
    for m in ms:
      jax.block_until_ready(one(b, m, steps))
  seq_s = time.perf_counter() - t
  return {"images": n, "betas": len(betas), "ms": len(ms), "steps": steps,
          "sweep_s": sweep_s, "sequential_s": seq_s,
          "speedup": seq_s / sweep_s, "compile_sweep_s": compile_sweep,
          "compile_sequential_s": compile_seq}


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m bench.solver")
  p.add_argument("--out", default="bench_out")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--sweep-steps", type=int, default=20)
  p.add_argument("--batches", default="1,64,256")
  args = p.parse_args(argv)
  prior, params, which = _prior()
  opt = optax.adam(0.05)
  rows = {"backend": jax.default_backend(), "params": which, "recover": []}
  for b in [int(v) for v in args.batches.split(",")]:
    r = time_recover(prior, params, b, args.steps, opt)
    rows["recover"].append(r)
    print(json.dumps(r), flush=True)
  rows["loop_modes"] = time_loop_modes(prior, params, 16, 10, opt, 5)
  print(json.dumps(rows["loop_modes"]), flush=True)
  rows["sweep"] = time_sweep(prior, params, args.sweep_steps, opt)
  print(json.dumps(rows["sweep"]), flush=True)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  mf.checkpoint.write_json_atomic(out / "solver.json", rows)


if __name__ == "__main__":
  main()
