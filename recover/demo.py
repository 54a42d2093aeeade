"""The main job: the paper's three headline tasks on shipped images, offline.

python -m recover.demo [--out out/demo] [--images 4]

On 4 (up to 8) shipped Fashion-MNIST test images (from the protocol's
reported set)
and the shipped priors it runs noisy 1-bit compressed sensing (m = 800,
s = 1), SINUSOIDAL denoising (s = 0.4) and digit-noise removal, with ours
(MAP with the true noise model), Asim et al., Bora et al. (the VAE) and BM3D
where it applies.  It prints a PSNR table and writes demo.png (rows: tasks x
images; columns: truth, measurement, ours, Asim, Bora, BM3D), psnr.csv and
psnr.json to --out.

The hyperparameters are those the experiment scripts chose on the 16
validation images for the same settings (``VALIDATED`` and, where the
start was chosen too, ``VALIDATED_START`` below; see
results/*/selection.csv), never tuned on the images shown.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mapflow as mf
from mapflow import viz
from recover.paper import cells
from recover.paper.methods import parse_start

METHODS = ("ours", "asim", "bora", "bm3d")
TITLES = {"ours": "ours", "asim": "Asim et al.", "bora": "Bora et al.",
          "bm3d": "BM3D"}
# Chosen by mean validation PSNR in results/<experiment>/results.csv:
# (β for ours, γ for Asim, λ for Bora, BM3D's σ as a multiple of the
# largest noise std).
VALIDATED = {
    "1-bit CS": {"ours": 0.1, "asim": 5.0, "bora": 0.001, "bm3d": None},
    "sinusoidal": {"ours": 1.0, "asim": 1.0, "bora": 0.0, "bm3d": 0.5},
    "digit noise": {"ours": 10.0, "asim": 5.0, "bora": 1.0, "bm3d": 0.1},
}
# Starts chosen on validation together with the value (``--inits``), where
# the experiment chose them; other methods use the task's default start.
VALIDATED_START = {
    # "pixels@0.01": ours moves the image itself, with Adam at lr 0.01.
    "sinusoidal": {"ours": "pixels@0.01", "asim": "zeros"},
    # "noise_latent": ours moves the digit flow's latent from 0.
    "digit noise": {"ours": "noise_latent", "asim": "measurements"},
}
# Where each task's choice comes from: (results folder, experiment, setting).
VALIDATED_FROM = {
    "1-bit CS": ("v1/one_bit", "one_bit", "m=800,s=1"),
    "sinusoidal": ("v1/sinusoidal", "sinusoidal", "0.4"),
    "digit noise": ("v1/digit_noise", "digits", "0.5x+digit"),
}


def _optimizer(start: str, default):
  """Adam at the start's own rate where it names one (``NAME@LR``)."""
  st = parse_start(start)
  return default if "@" not in start else cells.adam(st.lr)


def _tasks(x, digits, key, m, scale, sin_scale):
  """(name, operator, noise, y, shown measurement, init, BM3D reference
  std) of each task."""
  shape = x.shape[1:]
  a = mf.operators.gaussian(key, m, shape)
  one_bit = mf.operators.one_bit(a, 0.5)
  n1 = mf.noise.sinusoidal_1d(m, scale)
  y1 = one_bit(x) + n1.sample(seed=jax.random.fold_in(key, 1),
                              sample_shape=(len(x),))
  show1 = mf.solve.measurement_init(y1 - 0.5 * scale, one_bit, shape, 0, 1)
  ns = mf.noise.sinusoidal(shape, sin_scale)
  ys = x + ns.sample(seed=jax.random.fold_in(key, 2), sample_shape=(len(x),))
  yd = 0.5 * x + digits
  return [
      ("1-bit CS", one_bit, n1, y1, show1, "zeros", None),
      ("sinusoidal", mf.operators.identity(), ns, ys, jnp.clip(ys, 0, 1),
       "measurements", float(jnp.max(ns.std_map))),
      ("digit noise", mf.operators.scale(0.5), "digits", yd,
       jnp.clip(yd, 0, 1), "measurements",
       float(jnp.sqrt(jnp.mean(digits ** 2)))),
  ]


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m recover.demo",
                              description=__doc__.splitlines()[0])
  p.add_argument("--out", default="out/demo")
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--bora-steps", type=int, default=300)
  p.add_argument("--lr", type=float, default=0.03, help="Adam learning rate")
  p.add_argument("--m", type=int, default=800, help="1-bit measurements")
  p.add_argument("--scale", type=float, default=1.0,
                 help="noise scale s of 1-bit CS")
  p.add_argument("--sin-scale", type=float, default=0.4,
                 help="noise scale s of SINUSOIDAL")
  p.add_argument("--images", type=int, default=4,
                 help="how many (<= 8; the figure shows at most 4, and each "
                 "image adds about 10 s on a 2-core CPU)")
  p.add_argument("--prior", default="fashion_mnist_realnvp")
  p.add_argument("--noise-prior", default="digits_realnvp")
  p.add_argument("--vae", default="fashion_mnist_vae")
  p.add_argument("--full-compile", action="store_true",
                 help="compile at XLA's default optimisation level (the "
                 "demo's time is mostly compilation, so it runs at the "
                 "cheapest level unless asked)")
  p.add_argument("--threads", type=int, default=3,
                 help="tasks run side by side (1: one after another)")
  p.add_argument("--cache", default=None,
                 help="folder for JAX's persistent compilation cache, so a "
                 "second run skips compiling (default: $MAPFLOW_CACHE or "
                 "~/.cache/mapflow/jax; 'none' to turn it off)")
  args = p.parse_args(argv)
  if args.threads < 1:
    p.error(f"--threads: got {args.threads}, expected 1 or more")
  cache = args.cache or os.environ.get(
      "MAPFLOW_CACHE", str(Path.home() / ".cache" / "mapflow" / "jax"))
  if cache.lower() != "none":
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  if not args.full_compile:
    # Takes effect only if JAX has not started its CPU backend yet.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_backend_optimization_level=0").strip()
  from recover.common import load_prior
  t0 = time.time()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  imgs = mf.data.demo_images()
  n = max(1, min(args.images, 8))
  x = jnp.asarray(imgs["fashion_mnist"][:n], jnp.float32) / 255.0
  digits = jnp.asarray(imgs["digits"][:n], jnp.float32) / 255.0
  prior, params = load_prior(args.prior)
  noise_prior, noise_params = load_prior(args.noise_prior)
  decode, decode_params = mf.pretrained.load(args.vae)
  opt = optax.adam(args.lr)
  have_bm3d = True
  try:
    import bm3d  # noqa: F401
  except ImportError:
    have_bm3d = False
    print("bm3d not installed: skipping BM3D (pip install "
          "'mapflow[experiments]')", file=sys.stderr)
  from tqdm.auto import tqdm
  tasks = _tasks(x, digits, jax.random.PRNGKey(0), args.m, args.scale,
                 args.sin_scale)
  bar = tqdm(total=len(tasks) * len(METHODS), desc="demo", unit="run")

  import threading
  bm3d_lock = threading.Lock()

  def run_task(task):
    name, op, noise, y, shown, init, bm3d_ref = task
    hp = VALIDATED[name]
    start = {m: VALIDATED_START.get(name, {}).get(m, init)
             for m in ("ours", "asim")}
    if isinstance(noise, str):
      noise = mf.noise.from_flow(noise_prior, noise_params)
    res = {}
    res["ours"] = mf.recover(y, prior=prior, params=params, operator=op,
                             noise=noise, beta=hp["ours"], steps=args.steps,
                             optimizer=_optimizer(start["ours"], opt),
                             config=cells.start_config(parse_start(
                                 start["ours"]))).x
    bar.update()
    res["asim"] = mf.recover_asim(y, prior=prior, params=params, operator=op,
                                  gamma=hp["asim"], steps=args.steps,
                                  optimizer=_optimizer(start["asim"], opt),
                                  config=cells.start_config(parse_start(
                                      start["asim"]))).x
    bar.update()
    res["bora"] = mf.recover_bora(y, generator=decode,
                                  generator_params=decode_params, operator=op,
                                  latent_shape=(20,), lam=hp["bora"],
                                  steps=args.bora_steps, optimizer=opt,
                                  key=jax.random.PRNGKey(0),
                                  config=mf.SolverConfig(
                                      init="random", init_std=1.0,
                                      restarts=4)).x
    bar.update()
    if bm3d_ref is not None and have_bm3d:
      with bm3d_lock:  # the bm3d package is not thread-safe
        den = cells.bm3d_denoise(np.asarray(y), hp["bm3d"] * bm3d_ref)
      res["bm3d"] = jnp.clip(op.back_project(jnp.asarray(den)), 0, 1)
    bar.update()
    row = {"task": name}
    for m in METHODS:
      row[m] = (float(jnp.mean(mf.metrics.psnr(x, res[m])))
                if m in res else float("nan"))
    blank = jnp.ones_like(x)
    panel = jnp.stack([x, jnp.clip(shown, 0, 1)] +
                      [jnp.clip(res.get(m, blank), 0, 1) for m in METHODS],
                      axis=1)
    return row, panel

  # The tasks are independent, and the run is mostly XLA compiling, one
  # program at a time per thread: threads let compiles overlap each other
  # and the other tasks' steps.
  from concurrent.futures import ThreadPoolExecutor
  with ThreadPoolExecutor(max_workers=max(1, args.threads)) as pool:
    done = list(pool.map(run_task, tasks))
  rows = [r for r, _ in done]
  panels = [p_ for _, p_ in done]
  bar.close()
  mf.io.write_csv_atomic(out / "psnr.csv", rows,
                               ["task"] + list(METHODS))
  mf.io.write_json_atomic(out / "psnr.json", rows)
  k = min(n, 4)
  grid = np.concatenate([np.asarray(p_[:k]) for p_ in panels])
  flat = grid.reshape((-1,) + grid.shape[2:])
  names = [r["task"] for r in rows]
  viz.save_labelled_grid(
      out / "demo.png", flat, ncols=2 + len(METHODS),
      col_labels=["truth", "measurement"] + [TITLES[m] for m in METHODS],
      row_labels=[t if i == 0 else "" for t in names for i in range(k)],
      scale=3)
  print(f"\nPSNR (dB), mean over {n} images "
        f"[columns: {', '.join(METHODS)}]")
  print(f"{'task':<12}" + "".join(f"{m:>8}" for m in METHODS))
  for r in rows:
    print(f"{r['task']:<12}" + "".join(
        f"{r[m]:8.2f}" if np.isfinite(r[m]) else f"{'-':>8}"
        for m in METHODS))
  print(f"\nfigure: {out / 'demo.png'} (columns: truth, measurement, "
        f"{', '.join(METHODS)}); {time.time() - t0:.0f} s")


if __name__ == "__main__":
  main()
