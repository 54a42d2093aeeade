"""Shared pieces of the paper's experiments (DESIGN.md, "Experiment protocol").

* ``protocol_indices``: the 16 validation and 64 reported test images.
* ``ResultTable``: per-cell results in a CSV that is rewritten atomically
  after every finished cell, so a rerun skips what is done and an interrupt
  loses nothing finished.
* ``bm3d_denoise``: the BM3D baseline (optional ``bm3d`` package).
* ``isotropic_like``: the ablation's Gaussian noise of the same average
  variance as a structured Gaussian noise model.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from mapflow import noise as noise_lib


def protocol_indices(n_test: int = 10000) -> Tuple[np.ndarray, np.ndarray]:
  """``(validation, reported)`` indices into the test split (16 and 64).

  ``np.random.seed(0); idx = np.random.choice(n_test, 80, False)``; the
  first 16 choose hyperparameters, the other 64 are reported.
  """
  state = np.random.get_state()
  try:
    np.random.seed(0)
    idx = np.random.choice(n_test, 80, False)
  finally:
    np.random.set_state(state)
  return idx[:16], idx[16:]


def isotropic_like(noise) -> noise_lib.IsotropicGaussian:
  """iid Gaussian with the same average variance as a diagonal Gaussian."""
  std = np.asarray(noise.std_map)
  return noise_lib.gaussian(float(np.sqrt(np.mean(std ** 2))),
                            tuple(std.shape))


def bm3d_denoise(y, sigma: float) -> np.ndarray:
  """BM3D on each image of a batch (B, H, W, C) in [0, 1]-ish values."""
  try:
    import bm3d
  except ImportError:
    raise ImportError("BM3D needs the bm3d package: pip install "
                      "'mapflow[experiments]'") from None
  y = np.asarray(y, np.float64)
  out = np.empty_like(y)
  for i in range(y.shape[0]):
    for c in range(y.shape[-1]):
      out[i, ..., c] = bm3d.bm3d(y[i, ..., c], sigma_psd=float(sigma))
  return out.astype(np.float32)


class ResultTable:
  """Rows keyed by some columns, persisted to CSV after every ``add``.

  ``done(**key)`` says whether a cell is already recorded, so experiment
  loops skip finished work on a rerun.
  """

  def __init__(self, path, columns: Sequence[str], key: Sequence[str]):
    self.path = Path(path)
    self.columns, self.key = list(columns), list(key)
    missing = [k for k in self.key if k not in self.columns]
    if missing:
      raise ValueError(f"key: {missing} are not among columns {self.columns}")
    self.rows: List[Dict[str, str]] = []
    if self.path.is_file():
      with self.path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != self.columns:
          raise ValueError(
              f"{self.path}: has columns {reader.fieldnames}, expected "
              f"{self.columns}; move it away or use another --out")
        self.rows = list(reader)
    self._keys = {self._key_of(r) for r in self.rows}

  def _key_of(self, row) -> tuple:
    return tuple(str(row[k]) for k in self.key)

  def done(self, **key) -> bool:
    return tuple(str(key[k]) for k in self.key) in self._keys

  def add(self, rows: Iterable[dict]):
    """Appends rows (dicts with every column) and rewrites the file."""
    for r in rows:
      extra = set(r) - set(self.columns)
      lacking = set(self.columns) - set(r)
      if extra or lacking:
        raise ValueError(f"row: unexpected {sorted(extra)}, missing "
                         f"{sorted(lacking)}")
      row = {c: _fmt(r[c]) for c in self.columns}
      self.rows.append(row)
      self._keys.add(self._key_of(row))
    self._write()

  def _write(self):
    write_csv_atomic(self.path, self.rows, self.columns)


def write_csv_atomic(path, rows: Sequence[dict], columns: Sequence[str]):
  """Writes ``rows`` as CSV to a temporary file, then renames it over
  ``path``: readers see the old file or the new one, never a partial one."""
  path = Path(path)
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
  w.writeheader()
  w.writerows(rows)
  from mapflow.checkpoint import atomic_temp
  fd, tmp = atomic_temp(path)
  with os.fdopen(fd, "w", newline="") as f:
    f.write(buf.getvalue())
  os.replace(tmp, path)


def _fmt(v):
  if isinstance(v, (float, np.floating)):
    return f"{float(v):.6g}"
  return str(v)


def mean_and_stderr(values) -> Tuple[float, float]:
  """Mean and standard error of the mean."""
  v = np.asarray(values, np.float64)
  if v.size < 2:
    return float(v.mean()), float("nan")
  return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


# ---------------------------------------------------------------------------
# Denoising experiments (SINUSOIDAL, RADIAL): y = x + delta.

PAPER_BETAS = (0.1, 0.5, 1.0, 5.0, 10.0)
EXTENDED_BETAS = (0.01, 0.03) + PAPER_BETAS
ASIM_GAMMAS = (0.0, 0.1, 0.5, 1.0, 5.0)
BORA_LAMS = (0.0, 0.001, 0.01, 0.1, 1.0)
# BM3D's sigma^2 as multiples of the largest noise variance (s^2).
BM3D_VARIANCE_FACTORS = (0.1 ** 2, 0.5 ** 2, 1.0, 2.0 ** 2, 5.0 ** 2)
DENOISING_METHODS = ("ours", "ours_ext", "ablation", "asim", "bora", "bm3d")
RESULT_COLUMNS = ["experiment", "setting", "method", "hyper", "image",
                  "psnr"]
SELECTION_COLUMNS = ["experiment", "setting", "method", "hyper",
                     "val_psnr"]


# The "random" start's defaults: draws per image, and their latent std.
RANDOM_RESTARTS = 4
RANDOM_INIT_STD = 0.7

# Starts the flow methods may choose among (``Context(inits=...)``).
# "isotropic" (ours and ours_ext only) is a continuation: the isotropic
# ablation's MAP at the same β, run from z = 0 for the same steps, then
# the true noise model from there (twice the steps in all).  A stiff noise
# model (RADIAL's near-zero corner std) is hard to optimise from z = 0; the
# isotropic one is not.
# "noise_latent" (ours and ours_ext, flow noise and an invertible operator
# only) moves the noise flow's latent from w = 0 instead of the image's
# (``recover(parametrization="noise")``): the same objective, with the
# residual always on the noise flow's support.  Digit noise needs it: the
# digit flow's support is thin, and steps in the image latent leave it.
# "random" (every flow method) moves the image latent from ``restarts``
# draws z ~ N(0, init_std^2 I), and each image keeps the draw whose run ends
# at the lowest value of the method's own loss (never a look at the truth).
# 1-bit CS needs it: its straight-through loss is rugged, and one start
# from z = 0 stalls far from the MAP.
# "pixels" (the MAP methods: ours, ours_ext, the ablation) moves the image
# itself from the measurements (``parametrization="x"``).  Adam then scales
# each pixel's step by its own gradient, which suits a noise model whose
# per-pixel weights span many orders of magnitude (RADIAL).
# Any start may carry its own Adam learning rate, "NAME@LR" (for example
# "pixels@0.003"), chosen on the validation images like the start itself.
# A step size is in the units of what moves: pixels in [0, 1] want smaller
# steps than a flow latent of unit scale.  "isotropic@LR" runs only its
# continuation at LR (the isotropic MAP it starts from is the ablation's).
VALIDATED_INITS = ("measurements", "zeros", "isotropic", "noise_latent",
                   "pixels", "random")
TRUE_NOISE_ONLY_INITS = ("isotropic", "noise_latent")
MAP_ONLY_INITS = ("pixels",)


def split_start(start: str) -> Tuple[str, "float | None"]:
  """A start's name and its own learning rate: ``"pixels@0.003"`` gives
  ``("pixels", 0.003)``, ``"zeros"`` gives ``("zeros", None)``."""
  name, sep, lr = str(start).partition("@")
  if name not in VALIDATED_INITS:
    raise ValueError(f"inits: got start {start!r}, expected one of "
                     f"{VALIDATED_INITS}, optionally with @LR")
  if not sep:
    return name, None
  try:
    rate = float(lr)
  except ValueError:
    rate = float("nan")
  if not (np.isfinite(rate) and rate > 0):
    raise ValueError(f"inits: got start {start!r}, expected a positive "
                     "learning rate after '@' (as in pixels@0.003)")
  return name, rate


def start_kwargs(start: str, *, restarts: int = RANDOM_RESTARTS,
                 init_std: float = RANDOM_INIT_STD, seed: int = 0) -> dict:
  """``recover``/``sweep`` arguments of a named start (not "isotropic",
  which needs an earlier recovery), without its learning rate.
  ``restarts``, ``init_std`` and ``seed`` set the "random" start's draws."""
  name, _ = split_start(start)
  if name == "random":
    import jax
    return {"init": "random", "restarts": int(restarts),
            "init_std": float(init_std), "key": jax.random.PRNGKey(seed)}
  if name == "noise_latent":
    return {"init": "zeros", "parametrization": "noise"}
  if name == "pixels":
    return {"init": "measurements", "parametrization": "x"}
  return {"init": name}


def start_optimizer(start: str, default):
  """``optax.adam(LR)`` for a start ``"NAME@LR"``, else ``default``."""
  _, rate = split_start(start)
  return default if rate is None else _adam(rate)


@functools.lru_cache(maxsize=None)
def _adam(rate: float):
  # One optimiser object per rate: solve caches compiled steps by it.
  import optax
  return optax.adam(rate)


def _hyper_label(value, init, inits):
  """The ``hyper`` column: the value, plus the start when it was chosen."""
  return value if len(inits) == 1 else f"{value:g}|{init}"


def structured_noise(kind: str, shape, scale: float):
  if kind == "sinusoidal":
    return noise_lib.sinusoidal(shape, scale)
  if kind == "radial":
    return noise_lib.radial(shape, scale)
  raise ValueError(f"kind: got {kind!r}, expected 'sinusoidal' or 'radial'")


def _choose(values: Sequence[float], scores: Sequence[float]):
  scores = np.asarray(scores, np.float64)
  scores = np.where(np.isfinite(scores), scores, -np.inf)
  i = int(np.argmax(scores))
  return values[i], float(scores[i])


class Context:
  """What every cell of an experiment shares: prior, data, tables, knobs.

  ``decode`` is Bora et al.'s generator: ``decode(z)``, or
  ``decode(decode_params, z)`` when ``decode_params`` is given (what
  ``mapflow.pretrained.load`` returns for the VAE).
  """

  def __init__(self, out, *, prior, params, x_val, x_test, test_ids,
               decode=None, decode_params=None, steps=300, bora_steps=300,
               bora_restarts=4,
               methods=DENOISING_METHODS, seed=0, optimizer=None,
               progress=None, valid_methods=DENOISING_METHODS, x_ood=None,
               ood_ids=(), figures=True, bar=False,
               init_range=(0.02, 0.98), inits=None,
               restarts=RANDOM_RESTARTS, init_std=RANDOM_INIT_STD):
    import optax
    unknown = sorted(set(methods) - set(valid_methods))
    if unknown:
      raise ValueError(f"methods: got {unknown}, expected some of "
                       f"{tuple(valid_methods)}")
    if "bora" in methods and decode is None:
      raise ValueError("decode: Bora et al. needs a generator (the VAE)")
    self.out = Path(out)
    self.valid_methods = tuple(valid_methods)
    self.results = ResultTable(self.out / "results.csv", RESULT_COLUMNS,
                               ["experiment", "setting", "method", "image"])
    self.selection = ResultTable(self.out / "selection.csv",
                                 SELECTION_COLUMNS,
                                 ["experiment", "setting", "method", "hyper"])
    self.prior, self.params, self.decode = prior, params, decode
    self.decode_params = decode_params
    self.x_val, self.x_test = np.asarray(x_val), np.asarray(x_test)
    self.test_ids = [int(i) for i in test_ids]
    self.init_range = tuple(float(v) for v in init_range)
    # Starts of the flow methods to choose among on validation images, with
    # the hyperparameter; None keeps each experiment's own start.
    self.inits = None if not inits else tuple(inits)
    for start in self.inits or ():
      split_start(start)  # raises, naming the bad start
    if isinstance(restarts, bool) or int(restarts) != restarts or restarts < 1:
      raise ValueError(f"restarts: got {restarts!r}, expected an int >= 1")
    if not (np.isfinite(init_std) and init_std > 0):
      raise ValueError(f"init_std: got {init_std!r}, expected a positive "
                       "float")
    # Draws of the "random" start (see VALIDATED_INITS).
    self.restarts, self.init_std = int(restarts), float(init_std)
    self.x_ood = None if x_ood is None else np.asarray(x_ood)
    self.ood_ids = [str(i) for i in ood_ids]
    if (0 if x_ood is None else len(x_ood)) != len(self.ood_ids):
      raise ValueError(f"ood_ids: got {len(self.ood_ids)} names for "
                       f"{0 if x_ood is None else len(x_ood)} images")
    self.figures, self.bar = figures, bar
    self.steps, self.bora_steps = steps, bora_steps
    self.bora_restarts, self.methods, self.seed = bora_restarts, methods, seed
    self.optimizer = optimizer or optax.adam(1e-2)
    self.say = progress or (lambda msg: None)


def run_cell(ctx: Context, experiment: str, setting: str, op, noise, y_val,
             y_test, init: str = "zeros", ablation_noise=None,
             noise_scale=None, y_ood=None):
  """Every method of ``ctx.methods`` on one setting of one experiment.

  Each method's hyperparameter is chosen by mean validation PSNR, then run
  once on the test images.  ``init`` is the experiment's start, or a tuple
  of starts (``VALIDATED_INITS``) to choose among; ``ctx.inits`` overrides
  it.  With more than one start, the flow methods choose theirs jointly
  with the hyperparameter, recorded as ``"β|start"``.
  Cells already recorded are skipped.
  ``ablation_noise`` defaults to ``isotropic_like(noise)``; ``noise_scale``
  (BM3D's reference std) to the largest entry of ``noise.std_map``.
  ``y_ood`` (measurements of ``ctx.x_ood``) are recovered with the test
  images and recorded under ``f"{experiment}_ood"``.
  """
  import jax
  import jax.numpy as jnp

  from mapflow import metrics, solve

  x_val, x_test = jnp.asarray(ctx.x_val), jnp.asarray(ctx.x_test)
  prior, params, steps, opt = ctx.prior, ctx.params, ctx.steps, ctx.optimizer

  def done(method):
    return ctx.results.done(experiment=experiment, setting=setting,
                            method=method, image=ctx.test_ids[0])

  # Out-of-distribution images ride along in the test batch, with the
  # hyperparameter chosen on the in-distribution validation images.
  n_test = len(ctx.x_test)
  if y_ood is not None:
    x_all = jnp.concatenate([x_test, jnp.asarray(ctx.x_ood)])
    y_test = jnp.concatenate([jnp.asarray(y_test), jnp.asarray(y_ood)])
  else:
    x_all = x_test
  shown = {}

  own = (init,) if isinstance(init, str) else tuple(init)
  inits = ctx.inits or own
  base = lambda st: split_start(st)[0]
  how_of = lambda st: start_kwargs(st, restarts=ctx.restarts,
                                   init_std=ctx.init_std, seed=ctx.seed)
  if "noise_latent" in map(base, inits) and not (
      hasattr(noise, "latent_to_noise") and hasattr(op, "inverse")):
    raise ValueError(f"inits: 'noise_latent' needs flow noise and an "
                     f"invertible operator; {experiment} has "
                     f"{type(noise).__name__} noise and a "
                     f"{type(op).__name__} operator")

  def record(method, hyper_values, val_scores, run_test):
    best, best_score = _choose(hyper_values, val_scores)
    ctx.selection.add([{"experiment": experiment, "setting": setting,
                        "method": method, "hyper": h, "val_psnr": v}
                       for h, v in zip(hyper_values, val_scores)])
    x_hat = run_test(best)
    p = np.asarray(metrics.psnr(x_all, x_hat))
    rows = [{"experiment": experiment, "setting": setting, "method": method,
             "hyper": best, "image": i, "psnr": float(v)}
            for i, v in zip(ctx.test_ids, p[:n_test])]
    rows += [{"experiment": f"{experiment}_ood", "setting": setting,
              "method": method, "hyper": best, "image": i, "psnr": float(v)}
             for i, v in zip(ctx.ood_ids, p[n_test:])]
    ctx.results.add(rows)
    if ctx.figures:
      shown[method] = _keep_shown(ctx, experiment, setting, method, x_hat)
    ctx.say(f"{experiment} {setting} {method}: hyper {best}, val "
            f"{best_score:.2f} dB, test {p[:n_test].mean():.2f} dB")
    if not np.isfinite(best_score):
      ctx.say(f"WARNING: {experiment} {setting} {method}: no hyperparameter "
              "gave a finite validation PSNR (the recovery diverged; try "
              "another start with --inits, or a smaller --lr)")

  def record_flow(method, values, score, run, starts=None):
    """``record`` over (value, start) pairs of a flow method."""
    starts = [st for st in inits if starts is None or st in starts] or [
        own[0]]
    pairs = {_hyper_label(v, st, inits): (v, st)
             for st in starts for v in values}
    record(method, list(pairs), [score(*pairs[h]) for h in pairs],
           lambda h: run(*pairs[h]))

  # ours and ours_ext share the true noise model: their validation sweeps
  # and test runs are computed once per (noise model, start, beta) and
  # reused.
  pending = [m for m in ctx.methods if not done(m)]
  true_grid = EXTENDED_BETAS if "ours_ext" in pending else PAPER_BETAS
  val_cache, test_cache = {}, {}

  iso_noise = lambda: ablation_noise or isotropic_like(noise)
  sets = {"val": y_val, "test": y_test}
  iso_cache = {}  # (images, β) -> the isotropic MAP from z = 0: (x, z)

  def iso_map(which, betas):
    """The ablation's recoveries, shared with the continuation start."""
    todo = [b for b in betas if (which, b) not in iso_cache]
    if todo:
      grid = solve.sweep(sets[which], prior=prior, params=params,
                         operator=op, noise=iso_noise(),
                         betas=jnp.asarray(todo), steps=steps, optimizer=opt,
                         init="zeros")
      for i, b in enumerate(todo):
        iso_cache[(which, b)] = (grid.x[i, 0], grid.z[i, 0])
    return [iso_cache[(which, b)] for b in betas]

  def map_val_score(tag, noise_model, grid_betas, beta, start):
    todo = [b for b in grid_betas if (tag, start, b) not in val_cache]
    xs = []
    if todo and tag == "iso" and start == "zeros":
      xs = [x for x, _ in iso_map("val", todo)]
    elif todo:
      # The continuation ("isotropic") goes on from each β's own MAP.
      how = ({"init": jnp.stack([z for _, z in iso_map("val", todo)])[
          :, None]} if base(start) == "isotropic" else how_of(start))
      grid = solve.sweep(y_val, prior=prior, params=params, operator=op,
                         noise=noise_model, betas=jnp.asarray(todo),
                         steps=steps, optimizer=start_optimizer(start, opt),
                         init_range=ctx.init_range, **how)
      xs = [grid.x[i, 0] for i in range(len(todo))]
    for b, x in zip(todo, xs):
      val_cache[(tag, start, b)] = float(jnp.mean(metrics.psnr(x_val, x)))
    return val_cache[(tag, start, beta)]

  def map_test(tag, noise_model, beta, start):
    key = (tag, start, beta)
    if key in test_cache:
      return test_cache[key]
    if tag == "iso" and start == "zeros":
      test_cache[key] = iso_map("test", [beta])[0][0]
    else:
      how = ({"init": iso_map("test", [beta])[0][1]}
             if base(start) == "isotropic" else how_of(start))
      test_cache[key] = solve.recover(
          y_test, prior=prior, params=params, operator=op, noise=noise_model,
          beta=beta, steps=steps, optimizer=start_optimizer(start, opt),
          init_range=ctx.init_range, **how).x
    return test_cache[key]

  ablation_starts = [st for st in inits
                     if base(st) not in TRUE_NOISE_ONLY_INITS]
  asim_starts = [st for st in ablation_starts
                 if base(st) not in MAP_ONLY_INITS]

  def run_method(method):
    if method in ("ours", "ours_ext"):
      betas = PAPER_BETAS if method == "ours" else EXTENDED_BETAS
      record_flow(method, betas,
                  lambda b, st: map_val_score("true", noise, true_grid, b, st),
                  lambda b, st: map_test("true", noise, b, st))
    elif method == "ablation":
      iso = iso_noise()
      record_flow("ablation", PAPER_BETAS,
                  lambda b, st: map_val_score("iso", iso, PAPER_BETAS, b, st),
                  lambda b, st: map_test("iso", iso, b, st),
                  starts=ablation_starts)
    elif method == "asim":
      run = lambda g, st, y: solve.recover_asim(
          y, prior=prior, params=params, operator=op, gamma=g, steps=steps,
          optimizer=start_optimizer(st, opt), init_range=ctx.init_range,
          **how_of(st)).x
      record_flow("asim", ASIM_GAMMAS,
                  lambda g, st: float(jnp.mean(metrics.psnr(
                      x_val, run(g, st, y_val)))),
                  lambda g, st: run(g, st, y_test), starts=asim_starts)
    elif method == "bora":
      run = lambda l, y: solve.recover_bora(
          y, generator=ctx.decode, generator_params=ctx.decode_params,
          operator=op, latent_shape=(20,), lam=l,
          steps=ctx.bora_steps, restarts=ctx.bora_restarts, optimizer=opt,
          key=jax.random.PRNGKey(ctx.seed)).x
      scores = [float(jnp.mean(metrics.psnr(x_val, run(l, y_val))))
                for l in BORA_LAMS]
      record("bora", list(BORA_LAMS), scores, lambda l: run(l, y_test))
    elif method == "bm3d":
      scale = (float(np.max(np.asarray(noise.std_map)))
               if noise_scale is None else float(noise_scale))
      sigmas = [scale * float(np.sqrt(f)) for f in BM3D_VARIANCE_FACTORS]
      # Denoise y, then undo the operator (y = c x for the digit task).
      den = lambda y, sg: jnp.clip(op.back_project(jnp.asarray(
          bm3d_denoise(np.asarray(y), sg))), 0.0, 1.0)
      scores = [float(jnp.mean(metrics.psnr(x_val, den(y_val, sg))))
                for sg in sigmas]
      record("bm3d", sigmas, scores, lambda sg: den(y_test, sg))

  bar = None
  if ctx.bar and pending:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(pending), desc=f"{experiment} {setting}",
               unit="method", dynamic_ncols=True, leave=True)
  for method in ctx.methods:
    if done(method):
      continue
    if bar is not None:
      bar.set_postfix_str(method)
    run_method(method)
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()

  if shown and ctx.figures:
    # Methods recorded by earlier runs into this folder keep their column.
    for m in ctx.valid_methods:
      if m not in shown:
        kept = _load_shown(ctx, experiment, setting, m)
        if kept is not None:
          shown[m] = kept
    rows = _shown_rows(ctx, len(x_all))
    labels = [f"test {ctx.test_ids[i]}" if i < n_test else
              ctx.ood_ids[i - n_test] for i in rows]
    save_cell_figure(ctx, experiment, setting, np.asarray(x_all)[rows],
                     np.asarray(y_shown(op, y_test, x_all.shape[1:]))[rows],
                     shown, row_labels=labels)


def y_shown(op, y, image_shape):
  """What a figure shows as the measurement: y itself for image-shaped
  measurements, the back-projection otherwise (1-bit CS)."""
  import jax.numpy as jnp
  y = jnp.asarray(y)
  if y.ndim == 4:
    return jnp.clip(op.back_project(y), 0.0, 1.0)
  from mapflow import solve
  return solve.measurement_init(y, op, image_shape, 0.0, 1.0)


def _shown_rows(ctx: Context, n_all: int, per_part: int = 6):
  """Rows a cell's figure shows: the first test images and every
  out-of-distribution image."""
  n_test = len(ctx.x_test)
  return list(range(min(per_part, n_test))) + list(range(n_test, n_all))


def _shown_path(ctx: Context, experiment, setting, method):
  return (ctx.out / "figures" / "shown" /
          f"{_cell_name(experiment, setting)}_{method}.npz")


def _cell_name(experiment, setting):
  return f"{experiment}_{setting}".replace("=", "").replace(",", "_")


def _keep_shown(ctx: Context, experiment, setting, method, x_hat):
  """A method's recoveries of the figure's rows, as 8-bit images (what the
  PNG shows), kept on disk so a later run's figure still has them."""
  from mapflow.checkpoint import atomic_temp
  x_hat = np.asarray(x_hat)
  rows = np.clip(x_hat[_shown_rows(ctx, len(x_hat))], 0.0, 1.0)
  u8 = np.round(rows * 255.0).astype(np.uint8)
  path = _shown_path(ctx, experiment, setting, method)
  fd, tmp = atomic_temp(path, suffix=".npz")
  with os.fdopen(fd, "wb") as f:
    np.savez_compressed(f, images=u8)
  os.replace(tmp, path)
  return u8.astype(np.float32) / 255.0


def _load_shown(ctx: Context, experiment, setting, method):
  path = _shown_path(ctx, experiment, setting, method)
  if not path.is_file():
    return None
  with np.load(path) as f:
    return f["images"].astype(np.float32) / 255.0


def save_cell_figure(ctx: Context, experiment: str, setting: str, x, y,
                     shown: Dict[str, np.ndarray], row_labels=()):
  """PNG of truth | measurement | each method (columns, titled), for the
  rows of ``x`` and ``y`` (the first test images and every
  out-of-distribution image, named by ``row_labels``); ``shown`` maps each
  method to its recoveries of those rows."""
  from mapflow import viz
  from mapflow.checkpoint import write_text_atomic
  methods = [m for m in ctx.valid_methods if m in shown]
  cols = [np.asarray(x), np.clip(np.asarray(y), 0, 1)] + [
      np.clip(shown[m], 0, 1) for m in methods]
  if len({c.shape for c in cols}) != 1:
    raise ValueError(f"figure {experiment} {setting}: columns of shapes "
                     f"{[c.shape for c in cols]} (a kept method's images "
                     "are from a run with other image counts; delete "
                     f"{ctx.out / 'figures' / 'shown'})")
  grid = np.stack(cols, axis=1)
  name = _cell_name(experiment, setting)
  titles = ["truth", "measurement"] + methods
  viz.save_labelled_grid(ctx.out / "figures" / f"{name}.png",
                         grid.reshape((-1,) + grid.shape[2:]),
                         ncols=len(cols), col_labels=titles,
                         row_labels=list(row_labels), scale=3)
  write_text_atomic(ctx.out / "figures" / f"{name}.txt",
                    "columns: " + ", ".join(titles) + "\n")


def _split_keys(seed, *tags):
  import jax
  key = jax.random.PRNGKey(seed)
  for t in tags:
    key = jax.random.fold_in(key, int(t))
  return jax.random.split(key)


def _ood_measurements(ctx: Context, measure, key):
  """Measurements of the out-of-distribution images, on their own key (so
  the test images' noise does not depend on whether OOD images run)."""
  import jax
  if ctx.x_ood is None:
    return None
  return measure(ctx.x_ood, jax.random.fold_in(key, 0x00D))


def run_denoising(ctx: Context, kind: str, scales: Sequence[float]):
  """SINUSOIDAL or RADIAL: ``y = x + delta`` at each noise scale."""
  from mapflow import operators as ops
  shape = tuple(ctx.x_test.shape[1:])
  for s in scales:
    noise = structured_noise(kind, shape, float(s))
    kv, kt = _split_keys(ctx.seed, round(s * 1e4))
    y_val = ctx.x_val + noise.sample(seed=kv, sample_shape=(len(ctx.x_val),))
    y_test = ctx.x_test + noise.sample(seed=kt,
                                       sample_shape=(len(ctx.x_test),))
    y_ood = _ood_measurements(ctx, lambda x, k: x + noise.sample(
        seed=k, sample_shape=(len(x),)), kt)
    # Denoising starts at the measurements (Theorem 4.1's GD from y).
    run_cell(ctx, kind, f"{float(s):g}", ops.identity(), noise, y_val, y_test,
             init="measurements", y_ood=y_ood)
  return ctx.out / "results.csv"


def run_digit_noise(ctx: Context, noise_prior, noise_params, digits_val,
                    digits_test):
  """Digit noise: ``y = 0.5 x + delta``, delta a held-out handwritten digit.

  Ours scores the residual with the digit flow's density; the ablation
  uses iid N(0, sigma^2) with sigma^2 the digits' mean squared pixel value
  (the same average power); BM3D denoises y and rescales by 1/0.5.
  """
  from mapflow import operators as ops
  op = ops.scale(0.5)
  dv, dt = np.asarray(digits_val), np.asarray(digits_test)
  if len(dv) < len(ctx.x_val) or len(dt) < len(ctx.x_test):
    raise ValueError(f"digits: need {len(ctx.x_val)} + {len(ctx.x_test)}, "
                     f"got {len(dv)} + {len(dt)}")
  y_val = 0.5 * ctx.x_val + dv[:len(ctx.x_val)]
  y_test = 0.5 * ctx.x_test + dt[:len(ctx.x_test)]
  sigma = float(np.sqrt(np.mean(np.concatenate([dv, dt]) ** 2)))
  shape = tuple(ctx.x_test.shape[1:])
  # Ours also chooses, on validation, to move the digit flow's latent
  # ("noise_latent"): steps in the image latent leave the digit flow's
  # thin support and stall far from the MAP.
  run_cell(ctx, "digits", "0.5x+digit", op,
           noise_lib.from_flow(noise_prior, noise_params), y_val, y_test,
           init=("measurements", "noise_latent"),
           ablation_noise=noise_lib.gaussian(sigma, shape),
           noise_scale=sigma)
  return ctx.out / "results.csv"


SUBPIXEL_METHODS = ("ours", "ours_ext", "asim", "bora")


def run_subpixel(ctx: Context, keep: float = 0.75, sigma: float = 0.01):
  """Sub-pixel imputation, ``y = M * x`` with ``M ~ Bernoulli(keep)``.

  The task is noiseless; the MAP's noise model is iid N(0, sigma^2) with a
  small ``sigma`` (a data-fit weight, 1 / (2 sigma^2)).  One mask, drawn
  from the seed, serves every image: the solver shares one operator across
  a batch.
  """
  import jax
  import jax.numpy as jnp
  from mapflow import operators as ops
  shape = tuple(ctx.x_test.shape[1:])
  key, _ = _split_keys(ctx.seed, round(keep * 1e4))
  op = ops.mask(key, shape, keep)
  # Starts at z = 0: from the masked image, one Adam step already sends the
  # shipped Glow's inverse couplings to NaN (validation PSNR NaN at every
  # β), while z = 0 gives ~21 dB after 100 steps on validation images.
  run_cell(ctx, "subpixel", f"keep={keep:g}", op,
           noise_lib.gaussian(sigma, shape), op(jnp.asarray(ctx.x_val)),
           op(jnp.asarray(ctx.x_test)), init="zeros")
  return ctx.out / "results.csv"


ONE_BIT_METHODS = ("ours", "ours_ext", "ablation", "asim", "bora")


def run_one_bit(ctx: Context, settings: Sequence[Tuple[int, float]],
                max_m: int):
  """Noisy 1-bit CS, ``y = sign(A (x - 0.5)) + delta`` for (m, s) settings.

  One matrix of ``max_m`` rows serves every m (its first m rows), and one
  noise draw per scale, so settings along m are nested designs.
  """
  import jax
  from mapflow import operators as ops
  shape = tuple(ctx.x_test.shape[1:])
  a = ops.gaussian(jax.random.PRNGKey(ctx.seed + 101), max_m, shape)
  for m, s in settings:
    if not 0 < m <= max_m:
      raise ValueError(f"m: got {m}, expected 1..{max_m}")
    noise = noise_lib.sinusoidal_1d(max_m, float(s))
    op = ops.one_bit(ops.with_active(a, m), 0.5)
    kv, kt = _split_keys(ctx.seed, round(s * 1e4))
    y_val = op(ctx.x_val) + noise.sample(seed=kv,
                                         sample_shape=(len(ctx.x_val),))
    y_test = op(ctx.x_test) + noise.sample(seed=kt,
                                           sample_shape=(len(ctx.x_test),))
    y_ood = _ood_measurements(ctx, lambda x, k: op(x) + noise.sample(
        seed=k, sample_shape=(len(x),)), kt)
    run_cell(ctx, "one_bit", f"m={m},s={float(s):g}", op, noise, y_val,
             y_test, y_ood=y_ood)
  return ctx.out / "results.csv"


def summarize(results_csv) -> List[dict]:
  """Mean PSNR ± standard error per (experiment, setting, method)."""
  with Path(results_csv).open(newline="") as f:
    rows = list(csv.DictReader(f))
  groups: Dict[tuple, list] = {}
  hyper: Dict[tuple, str] = {}
  for r in rows:
    k = (r["experiment"], r["setting"], r["method"])
    groups.setdefault(k, []).append(float(r["psnr"]))
    hyper[k] = r["hyper"]
  out = []
  for k, v in sorted(groups.items(), key=lambda kv: (kv[0][0],
                                                    _setting_key(kv[0][1]),
                                                    kv[0][2])):
    m, se = mean_and_stderr(v)
    out.append({"experiment": k[0], "setting": k[1], "method": k[2],
                "hyper": hyper[k], "n": len(v), "psnr_mean": m,
                "psnr_stderr": se})
  return out


def _setting_key(setting: str):
  """Sorts "0.5" and "m=100,s=1" settings numerically."""
  try:
    return (float(setting),)
  except ValueError:
    pass
  try:
    return tuple(float(p.split("=")[1]) for p in setting.split(","))
  except (ValueError, IndexError):
    return (float("inf"), setting)
