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

Every method's value and start are read from the experiments' results
(``validated_choices``: results/<experiment>/results.csv, the choice made
on the 16 validation images at the same setting), never tuned on the
images shown.  Until an experiment's fair-protocol run is committed its
first run's folder, results/v1/<experiment>, is read instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

import mapflow as mf
from mapflow import viz
from recover.paper import cells, tables
from recover.paper.methods import BORA, parse_start
from recover.paper.protocol import isotropic_like

METHODS = ("ours", "asim", "bora", "bm3d")
TITLES = {"ours": "ours", "asim": "Asim et al.", "bora": "Bora et al.",
          "bm3d": "BM3D"}
# Where each task's choices come from: (results folder, experiment,
# setting).
DEMO_CELLS = {
    "1-bit CS": ("one_bit", "one_bit", "m=800,s=1"),
    "sinusoidal": ("sinusoidal", "sinusoidal", "0.4"),
    "digit noise": ("digit_noise", "digits", "0.5x+digit"),
}
RESULTS = Path(__file__).resolve().parents[1] / "results"


class Choice(NamedTuple):
  value: float              # β, γ, λ, or BM3D's σ over the reference std
  start: Optional[str]      # the start's label (flow methods), else None
  source: str               # the results folder it was read from


def results_prior(results, folder) -> str:
  """The signal prior a results folder was made with (its run.json; the
  v1 runs predate run.json and used the first shipped prior)."""
  import json
  f = Path(results) / folder / "run.json"
  if f.is_file():
    return json.loads(f.read_text())["prior"]
  return "fashion_mnist_realnvp"


def demo_cells(m: int = 800, scale: float = 1.0, sin_scale: float = 0.4):
  """``DEMO_CELLS`` at the command line's settings: each task reads its
  choices from the cell of the setting it runs."""
  cells_ = dict(DEMO_CELLS)
  cells_["1-bit CS"] = ("one_bit", "one_bit", f"m={m},s={scale:g}")
  cells_["sinusoidal"] = ("sinusoidal", "sinusoidal", f"{sin_scale:g}")
  return cells_


def validated_choices(results=RESULTS, demo_cells_=None):
  """``{task: {method: Choice}}`` from each task's results folder (the
  fair-protocol one, else its v1 run), at ``demo_cells_``'s settings
  (default ``DEMO_CELLS``)."""
  out = {}
  for task, (folder, experiment, setting) in (demo_cells_ or
                                              DEMO_CELLS).items():
    # A cell still being run (some method missing) is not read yet.
    need = set(METHODS) - ({"bm3d"} if task == "1-bit CS" else set())
    for where in (folder, f"v1/{folder}"):
      f = Path(results) / where / "results.csv"
      rows = [r for r in tables.read_rows(f)
              if r["experiment"] == experiment and r["setting"] == setting
              ] if f.is_file() else []
      if {r["method"] for r in rows} >= need:
        break
    else:
      raise FileNotFoundError(
          f"--results: no results for {experiment} at {setting} under "
          f"{results}/{folder} or {results}/v1/{folder}; each task reads "
          "its choices from the cell of the setting it runs (--m, --scale, "
          "--sin-scale), so run that cell first (python -m "
          "recover.report prints the commands)")
    out[task] = {}
    for method in METHODS:
      hit = [r for r in rows if r["method"] == method]
      if not hit:
        continue
      value, start = tables.split_hyper(hit[0]["hyper"])
      value = float(value)
      if method == "bm3d" and where.startswith("v1/"):
        # v1 recorded σ itself; its grid began at 0.1 x the reference std.
        sel = [float(r["hyper"]) for r in tables.read_rows(
            Path(results) / where / "selection.csv")
               if r["experiment"] == experiment and r["setting"] == setting
               and r["method"] == "bm3d"]
        value = value / (min(sel) / 0.1)
      default = "zeros" if task == "1-bit CS" else "measurements"
      flow = method in ("ours", "asim")
      out[task][method] = Choice(value, (start or default) if flow else None,
                                 where)
  return out


def _tasks(x, digits, key, m, scale, sin_scale):
  """(name, operator, noise, y, shown measurement, BM3D reference std) of
  each task."""
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
      ("1-bit CS", one_bit, n1, y1, show1, None),
      ("sinusoidal", mf.operators.identity(), ns, ys, jnp.clip(ys, 0, 1),
       float(jnp.max(ns.std_map))),
      ("digit noise", mf.operators.scale(0.5), "digits", yd,
       jnp.clip(yd, 0, 1), float(jnp.sqrt(jnp.mean(digits ** 2)))),
  ]


def main(argv=None):
  from recover.common import _positive
  p = argparse.ArgumentParser(prog="python -m recover.demo",
                              description=__doc__.splitlines()[0])
  p.add_argument("--out", default="out/demo")
  p.add_argument("--steps", type=_positive(int), default=None,
                 help="flow methods' steps (default: each chosen start's)")
  p.add_argument("--bora-steps", type=_positive(int), default=BORA.steps,
                 help=f"Bora et al.'s steps (default {BORA.steps}, its "
                 "protocol)")
  p.add_argument("--results", default=str(RESULTS),
                 help="where the validated choices are read from")
  p.add_argument("--m", type=_positive(int), default=800, help="1-bit measurements")
  p.add_argument("--scale", type=_positive(float), default=1.0,
                 help="noise scale s of 1-bit CS")
  p.add_argument("--sin-scale", type=_positive(float), default=0.4,
                 help="noise scale s of SINUSOIDAL")
  p.add_argument("--images", type=_positive(int), default=4,
                 help="how many (<= 8; the figure shows at most 4, and each "
                 "image adds about 10 s on a 2-core CPU)")
  p.add_argument("--prior", default=None,
                 help="signal prior (default: the one the results were "
                 "made with, from their run.json)")
  p.add_argument("--noise-prior", default="digits_realnvp")
  p.add_argument("--vae", default="fashion_mnist_vae")
  p.add_argument("--full-compile", action="store_true",
                 help="compile the steps at XLA's default optimisation "
                 "level and with its default emitters (slower overall here: "
                 "compiling is a large share of the demo's time, so it "
                 "compiles the cheapest way unless asked)")
  p.add_argument("--threads", type=_positive(int), default=3,
                 help="tasks run side by side (1: one after another)")
  p.add_argument("--cache", default=None,
                 help="folder for JAX's persistent compilation cache, so a "
                 "second run skips compiling (default: $MAPFLOW_CACHE or "
                 "~/.cache/mapflow/jax; 'none' to leave JAX's own setting, off unless "
                 "JAX_COMPILATION_CACHE_DIR is set)")
  args = p.parse_args(argv)
  if args.images > 8:
    p.error(f"--images: got {args.images}, expected at most 8")
  cache = args.cache or os.environ.get(
      "MAPFLOW_CACHE", str(Path.home() / ".cache" / "mapflow" / "jax"))
  if cache.lower() != "none":
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  # Takes effect only if JAX has not started its CPU backend yet.
  from mapflow import xla
  # jaxlib's own convolutions, not mapflow's: the three tasks' threads keep
  # both cores busy already (with mapflow's: 40.5 s against 36.8-38.9).
  # Compiling is a large share of the run: -O0 and XLA's older emitters
  # (49-51 s -> 37-41 s).
  flags = [os.environ.get("XLA_FLAGS", ""), xla.jaxlib_convolutions_flag()]
  if not args.full_compile:
    flags += xla.quick_compile_flags()
  os.environ["XLA_FLAGS"] = " ".join(f for f in flags if f).strip()
  from recover.common import load_prior
  t0 = time.time()
  from recover.common import check_out_folder
  out = check_out_folder(args.out)
  try:
    choices = validated_choices(args.results, demo_cells(
        args.m, args.scale, args.sin_scale))
  except FileNotFoundError as e:
    raise SystemExit(str(e)) from None
  out.mkdir(parents=True, exist_ok=True)
  imgs = mf.data.demo_images()
  n = args.images
  x = jnp.asarray(imgs["fashion_mnist"][:n], jnp.float32) / 255.0
  digits = jnp.asarray(imgs["digits"][:n], jnp.float32) / 255.0
  # Each task runs with the prior its choices were made with (the folders
  # it reads may come from different priors while a rerun is under way).
  loaded, priors = {}, {}
  for name, ch in choices.items():
    which = args.prior or results_prior(args.results, ch["ours"].source)
    if which not in loaded:
      loaded[which] = load_prior(which)
    priors[name] = loaded[which]
  noise_prior, noise_params = load_prior(args.noise_prior, "--noise-prior")
  decode, decode_params = load_prior(args.vae, "--vae", "vae")
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
    name, op, noise, y, shown, bm3d_ref = task
    ch = choices[name]
    prior, params = priors[name]
    start = {m: parse_start(ch[m].start) for m in ("ours", "asim")}
    if isinstance(noise, str):
      noise = mf.noise.from_flow(noise_prior, noise_params)
    res = {}
    if start["ours"].kind == "isotropic":
      # The continuation: the ablation's MAP, then ours from there.
      st = start["ours"]._replace(steps=args.steps or start["ours"].steps)
      cfg = mf.SolverConfig(init=cells.ablation_latents(
          y, prior=prior, params=params, operator=op,
          noise=isotropic_like(noise), beta=ch["ours"].value, start=st))
    else:
      cfg = cells.start_config(start["ours"])
    res["ours"] = mf.recover(y, prior=prior, params=params, operator=op,
                             noise=noise, beta=ch["ours"].value,
                             steps=args.steps or start["ours"].steps,
                             optimizer=cells.adam(start["ours"].lr),
                             config=cfg).x
    bar.update()
    res["asim"] = mf.recover_asim(y, prior=prior, params=params, operator=op,
                                  gamma=ch["asim"].value,
                                  steps=args.steps or start["asim"].steps,
                                  optimizer=cells.adam(start["asim"].lr),
                                  config=cells.start_config(start["asim"])).x
    bar.update()
    res["bora"] = mf.recover_bora(y, generator=decode,
                                  generator_params=decode_params, operator=op,
                                  latent_shape=(20,), lam=ch["bora"].value,
                                  steps=args.bora_steps,
                                  optimizer=cells.adam(BORA.lr),
                                  key=jax.random.PRNGKey(0),
                                  config=mf.SolverConfig(
                                      init="random", init_std=1.0,
                                      restarts=BORA.restarts)).x
    bar.update()
    if bm3d_ref is not None and have_bm3d:
      with bm3d_lock:  # the bm3d package is not thread-safe
        den = cells.bm3d_denoise(np.asarray(y), ch["bm3d"].value * bm3d_ref)
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
