"""One experiment cell: every method tuned on the validation images, then
run once on the reported ones.

A cell is a task (an operator, a noise model and measurements of the
validation and test images) at one setting.  For each method of the
protocol:

1. each (value, start) the method is offered is scored by mean validation
   PSNR, recorded in ``selection.csv`` as it is measured (and read back
   from there on a rerun instead of being measured again);
2. the grid of the best start grows (``methods.grow``) until its chosen
   value is interior;
3. the chosen (value, start) runs on the test images (with the
   out-of-distribution ones, reported apart), recorded in ``results.csv``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from recover.paper import figures as figs
from recover.paper import tables
from recover.paper.methods import (BORA, GROWN_STARTS, METHODS, TIE_DB,
                                   BoraProtocol,
                                   RANDOM_INIT_STD, RANDOM_RESTARTS, Method,
                                   Start, check_fair, choose, grow, offers)
from recover.paper.protocol import PROTOCOLS, Protocol, isotropic_like


class Models(NamedTuple):
  """The signal prior and Bora et al.'s generator (``decode(params, z)``)."""

  prior: object
  params: object
  decode: Optional[Callable] = None
  decode_params: object = None


class Images(NamedTuple):
  """Validation and reported test images in [0, 1], their ids in the test
  split, and out-of-distribution images reported apart."""

  x_val: np.ndarray
  x_test: np.ndarray
  val_ids: Tuple[int, ...]
  test_ids: Tuple[int, ...]
  x_ood: Optional[np.ndarray] = None
  ood_ids: Tuple[str, ...] = ()


class Options(NamedTuple):
  """How a run goes.  ``starts`` (None: each protocol's own) replaces the
  starts offered to the flow methods; ``restarts`` and ``init_std`` set
  the random start's draws."""

  methods: Tuple[str, ...]
  starts: Optional[Tuple[Start, ...]] = None
  seed: int = 0
  restarts: int = RANDOM_RESTARTS
  init_std: float = RANDOM_INIT_STD
  figures: bool = True
  bar: bool = False
  say: Callable[[str], None] = lambda msg: None
  bora: BoraProtocol = BORA


class SettingError(ValueError):
  """A run's settings differ from those its results folder was made with."""


class Context:
  """What every cell of an experiment run shares: the output folder (held
  under a ``FolderLock`` while open), its two tables, models, images and
  options.  Use as ``with Context(...) as ctx:``."""

  def __init__(self, out, models: Models, images: Images, options: Options,
               run_info: Optional[dict] = None):
    from mapflow import io as io_lib
    if "bora" in options.methods and models.decode is None:
      raise ValueError("decode: Bora et al. needs a generator (the VAE)")
    unknown = sorted(set(options.methods) - set(METHODS))
    if unknown:
      raise ValueError(f"methods: got {unknown}, expected some of "
                       f"{tuple(METHODS)}")
    r = options.restarts
    if isinstance(r, bool) or int(r) != r or r < 1:
      raise ValueError(f"restarts: got {r!r}, expected an int >= 1")
    if not (np.isfinite(options.init_std) and options.init_std > 0):
      raise ValueError(f"init_std: got {options.init_std!r}, expected a "
                       "positive float")
    n_ood = 0 if images.x_ood is None else len(images.x_ood)
    if n_ood != len(images.ood_ids):
      raise ValueError(f"ood_ids: got {len(images.ood_ids)} names for "
                       f"{n_ood} images")
    if len(images.val_ids) != len(images.x_val):
      raise ValueError(f"val_ids: got {len(images.val_ids)} ids for "
                       f"{len(images.x_val)} validation images")
    self.out = Path(out)
    self.models, self.images, self.options = models, images, options
    self.lock = io_lib.FolderLock(self.out, what="--out")
    self.results = self.selection = self.draws = None
    # What made the folder's results (``run.json``): the prior above all,
    # so that a rerun with another one cannot mix into the tables.
    self.run_info = dict(run_info or {})

  def __enter__(self):
    from mapflow import io as io_lib
    self.lock.acquire()
    try:
      # Temporaries of a writer killed mid-write (we hold the lock now).
      io_lib.remove_orphans(self.out, ["results.csv", "selection.csv",
                                       tables.DRAWS_FILE, "summary.json",
                                       "run.json"])
      self.results = tables.ResultTable(self.out / "results.csv",
                                        tables.RESULT_COLUMNS,
                                        tables.RESULT_KEY)
      self.selection = tables.ResultTable(self.out / "selection.csv",
                                          tables.SELECTION_COLUMNS,
                                          tables.SELECTION_KEY)
      self.draws = tables.ResultTable(self.out / tables.DRAWS_FILE,
                                      tables.DRAWS_COLUMNS, tables.DRAWS_KEY)
      # Kept recoveries (figures/shown) can precede a method's rows.
      shown = self.out / "figures" / "shown"
      self._check_run_info(any(t.rows for t in (
          self.results, self.selection, self.draws)) or (
              shown.is_dir() and any(shown.iterdir())))
    except BaseException:
      self.lock.release()
      raise
    return self

  def __exit__(self, *exc):
    self.lock.release()
    return False

  def say(self, msg: str):
    self.options.say(msg)

  def _check_run_info(self, has_rows: bool):
    """Refuses settings other than those the folder's rows (or kept
    recoveries) were made with.  A run.json without them (a run stopped
    before its first result, or one that refused a value after starting)
    binds nothing: it is replaced."""
    import json
    from mapflow import io as io_lib
    f = self.out / "run.json"
    if f.is_file() and has_rows:
      have = json.loads(f.read_text())
      # Every setting that changes a score must match, or results of two
      # configurations would mix (cached scores, finished cells).
      for k in sorted(set(have) & set(self.run_info)):
        if (k.startswith("prior_") or k == "hosts"
            or have[k] == self.run_info[k]):
          continue
        what = (f"the starts' default {k[6:]} (recover/paper/methods.py)"
                if k in ("start_lr", "start_steps") else
                "ours_heldout's validation score (its definition changed; "
                "recover/paper/cells.py)" if k == "blind_selection"
                else f"--{k.replace('_', '-')}")
        raise SettingError(
            f"{what}: got {self.run_info[k]!r}, but the results in "
            f"{self.out} were made with {have[k]!r}; use another --out")
      hosts = list(have.get("hosts", []))
      hosts += [h for h in self.run_info.get("hosts", []) if h not in hosts]
      self.run_info = {**have, **self.run_info}
      if hosts:
        self.run_info["hosts"] = hosts
    if self.run_info:
      io_lib.write_json_atomic(f, self.run_info)


class Task(NamedTuple):
  """One cell's problem: ``y = operator(x) + noise``.

  ``ablation_noise`` (None: ``isotropic_like(noise)``) is the ablation's
  noise model; ``bm3d_scale`` (None: the largest entry of ``noise.std_map``)
  BM3D's reference std.  ``y_ood``: measurements of the context's
  out-of-distribution images.  ``test_operator`` (None: ``operator``) is
  the test images' operator where each image has its own
  (``operators.batched``).  ``noise_examples``: noise-only examples the
  noise model did not train on and the measurements do not use (the blind
  score of noise that neither factorises nor can be redrawn,
  ``blind_score_kind``).
  """

  experiment: str
  setting: str
  operator: object
  noise: object
  y_val: object
  y_test: object
  y_ood: object = None
  ablation_noise: object = None
  bm3d_scale: Optional[float] = None
  test_operator: object = None
  noise_examples: object = None


def bm3d_denoise(y, sigma: float) -> np.ndarray:
  """BM3D on each image of a batch (B, H, W, C) in [0, 1]-ish values."""
  try:
    import bm3d
  except ImportError:
    raise ImportError("BM3D needs the bm3d package: pip install "
                      "'mapflow[experiments]'") from None
  # The default profile ("np") on one thread: with several, bm3d sums in
  # an order that varies run to run (its outputs differed by ~1e-7 between
  # calls on the same input); one thread is as fast at these sizes.
  profile = bm3d.BM3DProfile()
  profile.num_threads = 1
  y = np.asarray(y, np.float64)
  out = np.empty_like(y)
  for i in range(y.shape[0]):
    for c in range(y.shape[-1]):
      out[i, ..., c] = bm3d.bm3d(y[i, ..., c], sigma_psd=float(sigma),
                                 profile=profile)
  return out.astype(np.float32)


@functools.lru_cache(maxsize=None)
def adam(rate: float):
  # One optimiser object per rate: the solver caches compiled steps by it.
  import optax
  return optax.adam(rate)


def start_config(start: Start, *, restarts: int = RANDOM_RESTARTS,
                 init_std: float = RANDOM_INIT_STD, seed: int = 0,
                 init_range=(0.02, 0.98)):
  """The ``SolverConfig`` of a start (not the continuation, "isotropic",
  which needs an earlier recovery)."""
  import jax
  from mapflow.solve import SolverConfig
  cfg = SolverConfig(init_range=tuple(init_range))
  if start.kind == "random":
    return cfg._replace(init="random", restarts=int(restarts),
                        init_std=float(init_std),
                        key=jax.random.PRNGKey(seed))
  if start.kind == "noise_latent":
    return cfg._replace(init="zeros", parametrization="noise")
  if start.kind == "pixels":
    return cfg._replace(init="measurements", parametrization="x")
  if start.kind == "isotropic":
    raise ValueError("start_config: the isotropic start needs the "
                     "ablation's MAP; run_cell computes it")
  return cfg._replace(init=start.kind)


def task_starts(task: Task) -> Tuple[str, ...]:
  """Start kinds the task allows: moving the noise latent needs flow noise
  and an invertible operator."""
  kinds = ["zeros", "measurements", "random", "pixels", "isotropic"]
  if hasattr(task.noise, "latent_to_noise") and hasattr(task.operator,
                                                        "inverse"):
    kinds.append("noise_latent")
  return tuple(kinds)


class _Cell:
  """The solvers of one cell, with what they share cached."""

  def __init__(self, ctx: Context, task: Task, protocol: Protocol):
    import jax.numpy as jnp
    self.ctx, self.task, self.protocol = ctx, task, protocol
    img = ctx.images
    self.x = {"val": jnp.asarray(img.x_val)}
    self.y = {"val": jnp.asarray(task.y_val)}
    if task.y_ood is not None:
      self.x["test"] = jnp.concatenate([jnp.asarray(img.x_test),
                                        jnp.asarray(img.x_ood)])
      self.y["test"] = jnp.concatenate([jnp.asarray(task.y_test),
                                        jnp.asarray(task.y_ood)])
    else:
      self.x["test"] = jnp.asarray(img.x_test)
      self.y["test"] = jnp.asarray(task.y_test)
    self.val_images = " ".join(str(int(i)) for i in img.val_ids)
    self.op = {"val": task.operator,
               "test": task.test_operator or task.operator}
    self._keep = None  # held-out entries of the validation measurements
    self._rate = None  # real noise's log-density per entry
    self._val_maps = {}  # (objective, start, value) -> validation MAPs
    self._shares_val_maps = (
        "ours_heldout" in ctx.options.methods
        and blind_score_kind(task) == "typical")
    self._splits = {}  # draw -> recorrupted validation measurements
    self._iso = {}  # (which, β, lr, steps) -> the isotropic MAP's latents

  def noise_of(self, method: Method, which: str = "val"):
    """The noise model ``method`` fits the ``which`` images under: on
    recorrupted measurements ("val_r2r") √(1 + α²) times the std."""
    if method.noise == "true":
      noise = self.task.noise
    elif method.noise == "isotropic":
      noise = self.task.ablation_noise or isotropic_like(self.task.noise)
    else:
      return None
    if which.startswith("val_r2r"):
      from mapflow import holdout
      noise = holdout.scaled_gaussian(noise, float(np.sqrt(1 + R2R_ALPHA ** 2)))
    return noise

  def solve(self, method: Method, start: Optional[Start], value: float,
            which: str):
    """The method's recoveries of the ``which`` ("val" or "test") images."""
    import jax
    import jax.numpy as jnp
    from mapflow import solve
    ctx, task = self.ctx, self.task
    m = ctx.models
    y = self.y[which]
    opts = ctx.options
    if method.family == "denoiser":
      # ``value`` is σ as a multiple of the reference std.
      den = bm3d_denoise(np.asarray(y), value * bm3d_reference(task))
      return jnp.clip(self.op[which].back_project(jnp.asarray(den)), 0.0,
                      1.0)
    if method.family == "generator":
      return solve.recover_bora(
          y, generator=m.decode, generator_params=m.decode_params,
          operator=self.op[which], latent_shape=(20,), lam=value,
          steps=opts.bora.steps, optimizer=adam(opts.bora.lr),
          key=jax.random.PRNGKey(opts.seed),
          config=solve.SolverConfig(init="random", init_std=1.0,
                                    restarts=opts.bora.restarts)).x
    if start.kind == "isotropic":
      cfg = solve.SolverConfig(
          init=self._isotropic_latents(start, value, which),
          init_range=self.protocol.init_range)
    else:
      cfg = start_config(start, restarts=opts.restarts,
                         init_std=opts.init_std, seed=opts.seed,
                         init_range=self.protocol.init_range)
    common = dict(prior=m.prior, params=m.params, operator=self.op[which],
                  steps=start.steps, optimizer=adam(start.lr), config=cfg)
    if method.name == "asim":
      return solve.recover_asim(y, gamma=value, **common).x
    # Where a blind score reads the validation MAP itself ("typical"), ours
    # and ours_heldout minimise one objective: they share those MAPs.
    memo = ((method.family, method.noise, method.grid.symbol, start, value)
            if which == "val" and self._shares_val_maps else None)
    if memo not in self._val_maps:
      x = solve.recover(y, noise=self.noise_of(method, which), beta=value,
                        **common).x
      if memo is None:
        return x
      self._val_maps[memo] = x
    return self._val_maps[memo]

  def _isotropic_latents(self, start: Start, beta: float, which: str):
    """The ablation's MAP from z = 0 at the same β, rate and steps."""
    key = (which, beta, start.lr, start.steps)
    if key not in self._iso:
      m = self.ctx.models
      self._iso[key] = ablation_latents(
          self.y[which], prior=m.prior, params=m.params,
          operator=self.op[which],
          noise=self.noise_of(METHODS["ablation"], which), beta=beta,
          start=start)
    return self._iso[key]

  def score(self, method: Method, start, value: float) -> float:
    """A (value, start)'s validation score: mean PSNR against the truth,
    or (``select="heldout"``, no truth; ``blind_score_kind``) in
    denoising the PSNR that recorrupted measurements estimate
    (``holdout.recorrupted_error``: -10 log10 of the MAP's estimated mean
    squared error); under flow noise -10 log10 of the residual's
    typicality gap (``holdout.residual_typicality``, nats per entry);
    otherwise -10 log10 of the mean squared error with which a MAP fitted
    without them predicts held-out validation measurements.  Every score
    is -10 log10 of something smaller-better (dB), higher better."""
    import jax.numpy as jnp
    from mapflow import holdout, metrics
    from mapflow import operators as ops
    if method.select == "psnr":
      x_hat = self.solve(method, start, value, "val")
      return float(jnp.mean(metrics.psnr(self.x["val"], x_hat)))
    if self.refines(method):
      return error_db(self.recorrupted_error(method, start, value, 0))
    noise = self.noise_of(method)
    if blind_score_kind(self.task) == "typical":
      if self._rate is None:
        self._rate = holdout.noise_log_density_rate(
            noise, self.task.noise_examples)
      x_hat = self.solve(method, start, value, "val")
      gap = holdout.residual_typicality(noise, self.y["val"],
                                        self.op["val"](x_hat), self._rate)
      # In dB as the other scores are: -10 log10 of the gap.
      return float(-10.0 * jnp.log10(jnp.maximum(gap, 1e-10)))
    if self._keep is None:
      holdout.check_factorises(noise)
      self._keep = holdout.holdout_keep(self.y["val"].shape[1:])
      self.op["val_fit"] = ops.masked(self.op["val"], self._keep)
      self.y["val_fit"] = self.y["val"]
    x_hat = self.solve(method, start, value, "val_fit")
    measured = getattr(self.op["val"], "measurement_mask", lambda: None)()
    err = holdout.heldout_error(noise, self.y["val"], self.op["val"](x_hat),
                                self._keep, measured)
    # In dB as the other scores are (so TIE_DB means 0.01 dB here too):
    # -10 log10 of the held-out mean squared prediction error.
    return float(-10.0 * jnp.log10(jnp.maximum(jnp.mean(err), 1e-10)))

  def refines(self, method: Method) -> bool:
    """Whether ``method``'s scores are recorrupted estimates, whose best
    few ``tune`` scores again over more draws."""
    return (method.select != "psnr"
            and blind_score_kind(self.task) == "recorrupted")

  def recorrupted_error(self, method: Method, start, value: float,
                        draw: int) -> float:
    """The MAP's mean squared error per pixel on the validation images, as
    recorrupted measurements of draw ``draw`` estimate it (unbiased; may
    be negative): fitted to y + αz, checked against y - z/α.  Draws come
    in antithetic pairs: an odd draw flips the sign of the even draw
    before it; draw 0's z is the one every single-draw score used."""
    import jax
    import jax.numpy as jnp
    from mapflow import holdout
    which = "val_r2r" if draw == 0 else f"val_r2r{draw}"
    if which not in self.y:
      pair = draw - draw % 2
      if pair not in self._splits:
        key = jax.random.fold_in(
            jax.random.PRNGKey(self.ctx.options.seed), 0x2E2)
        if pair:
          key = jax.random.fold_in(key, pair)
        self._splits[pair] = holdout.recorrupt(
            self.noise_of(method), self.y["val"], key, R2R_ALPHA)
      if draw % 2:
        self._splits[draw] = holdout.mirrored(self._splits[pair],
                                              self.y["val"])
      self.y[which] = self._splits[draw].y_fit
      self.op[which] = self.op["val"]
    x_hat = self.solve(method, start, value, which)
    err = holdout.recorrupted_error(self._splits[draw], self.op["val"](x_hat))
    return float(jnp.mean(err))


def ablation_latents(y, *, prior, params, operator, noise, beta: float,
                     start: Start):
  """The first half of the continuation start ("isotropic"): the
  ablation's MAP latents (``noise`` its isotropic model) from z = 0 at
  the same β, with the start's learning rate and steps."""
  from mapflow import solve
  return solve.recover(y, prior=prior, params=params, operator=operator,
                       noise=noise, beta=beta, steps=start.steps,
                       optimizer=adam(start.lr)).z


# Recorrupted measurements' α: the MAP is judged at (1 + α²) times the
# noise variance; smaller α judges nearer the true level, with more noise.
R2R_ALPHA = 0.5
# One draw's estimate is noisy where the MAP's error is small (at RADIAL
# s = 0.1 it scored β 0.25 0.04 dB above β 0.5, whose fit to y + αz is
# 0.75 dB better), so the R2R_REFINED best by one draw are scored again
# over R2R_DRAWS draws (two antithetic pairs), and the choice is made among
# them by the mean: a few more fits per cell, not R2R_DRAWS times all.
R2R_DRAWS = 4
R2R_REFINED = 3
# error_db is -10 log10 down to this error (100 dB), then linear.
R2R_FLOOR = 1e-10
# Scores written before error_db clamped every estimate <= R2R_FLOOR here.
R2R_LEGACY_CLAMP_DB = 100.0


def error_db(error: float) -> float:
  """An estimated mean squared error as a score, higher better:
  -10 log10(e) for e >= ``R2R_FLOOR`` (at most 100 dB), continued below it
  by its tangent there, 100 + (10 / ln 10)(1 - e / R2R_FLOOR).  The
  estimate is unbiased, so it can be 0 or negative (at high noise one
  draw's often is); this keeps such estimates in their order instead of
  tying them all at the floor.  Rounded as the tables write it."""
  e = float(error)
  if not np.isfinite(e):
    return float("nan")
  if e >= R2R_FLOOR:
    db = -10.0 * np.log10(e)
  else:
    db = 100.0 + (10.0 / np.log(10.0)) * (1.0 - e / R2R_FLOOR)
  return float(tables._fmt(db))


def error_of_db(score: float) -> float:
  """The estimate ``error_db`` scored (inverse up to rounding)."""
  if score <= 100.0:
    return 10.0 ** (-score / 10.0)
  return R2R_FLOOR * (1.0 - (score - 100.0) * np.log(10.0) / 10.0)


def blind_score_kind(task: Task) -> str:
  """How ``ours_heldout`` scores a configuration without ground truth:
  "recorrupted" for Gaussian noise under an invertible operator
  (denoising), where the measurement-space error it estimates is the
  image's; "heldout" (held-out entries) for other noise that factorises
  over entries (1-bit CS, and sub-pixel imputation, whose
  measurement-space error sees only the kept pixels); "typical" for noise
  that does neither (a flow's: digit noise), by how typical the residual
  is of the task's ``noise_examples`` (``holdout.residual_typicality``)."""
  from mapflow import holdout
  try:
    holdout.gaussian_std(task.noise)
  except ValueError:
    try:
      holdout.check_factorises(task.noise)
    except ValueError:
      if task.noise_examples is None or len(task.noise_examples) == 0:
        raise ValueError(
            f"{task.experiment}: its noise ({type(task.noise).__name__}) "
            "neither factorises nor can be redrawn, so a blind selection "
            "needs noise_examples (noise-only examples); got none") from None
      return "typical"
    return "heldout"
  return "recorrupted" if hasattr(task.operator, "inverse") else "heldout"


def bm3d_reference(task: Task) -> float:
  """The std BM3D's σ is a multiple of: the largest noise std, or the
  task's own ``bm3d_scale``."""
  if task.bm3d_scale is not None:
    return float(task.bm3d_scale)
  return float(np.max(np.asarray(task.noise.std_map)))


def tune(cell: _Cell, method: Method, starts: Sequence[Optional[Start]],
         include: Optional[Tuple[float, Optional[Start]]] = None):
  """Validation scores of ``method`` over its grid and ``starts`` (None for
  a method without starts), the grids of the ``GROWN_STARTS`` best starts
  grown until each one's choice is settled.  ``include``: a (value, start) to score as well
  (a recorded choice).  Returns ``(value, start, score, scores)`` with
  ``scores[start][value]``.

  Where the scores are recorrupted estimates (``_Cell.refines``), the grids
  grow on one draw's scores, the same draw for every configuration (its
  common error cancels in their order); the ``R2R_REFINED`` best by it are
  then scored again as the mean over ``R2R_DRAWS`` draws, and the choice
  is made among those by the mean (``blind_plan``).  One draw's scores are
  not compared with means: at high noise a draw's common error is larger
  than the differences between configurations.

  Every score cached for ``starts`` is read first; then each step measures
  one value or scores one configuration over more draws, chosen from the
  scores so far.  The scores are thus a function of the cached rows: a run
  killed anywhere resumes on the same path as an uninterrupted one, and a
  finished one, run again with the same offer, measures nothing."""
  ctx, task = cell.ctx, cell.task
  base = dict(experiment=task.experiment, setting=task.setting,
              method=method.name)

  def label(st):
    return "" if st is None else st.label

  scores: Dict[Optional[Start], Dict[float, float]] = {s: {} for s in starts}

  def measure(st, values):
    for v in values:
      v = float(tables._fmt(v))
      row = ctx.selection.get(**base, hyper=v, start=label(st))
      if row is not None and row["val_images"] == cell.val_images:
        scores[st][v] = float(row["val_score"])
        continue
      # At the table's precision, so a rerun that reads it back ties and
      # chooses exactly as this run does.
      s = float(tables._fmt(cell.score(method, st, v)))
      scores[st][v] = s
      ctx.selection.add([dict(base, hyper=v, start=label(st),
                              val_images=cell.val_images, val_score=s)])

  def cached_error(st, v, d, score):
    """Draw ``d``'s raw estimate if known without a fit, else None: draw
    0's is read back from its score, unless that is an old clamp (an
    estimate at or below the floor, fitted again, as the mean needs its
    value); the others are cached in ``recorrupted.csv``."""
    if d == 0 and score != R2R_LEGACY_CLAMP_DB:
      return error_of_db(score)
    row = ctx.draws.get(**base, hyper=v, start=label(st), draw=d)
    if row is not None and row["val_images"] == cell.val_images:
      return float(row["est_error"])
    return None

  def draw_error(st, v, d, score) -> float:
    e = cached_error(st, v, d, score)
    if e is None:
      e = float(tables._fmt(cell.recorrupted_error(method, st, v, d)))
      ctx.draws.add([dict(base, hyper=v, start=label(st), draw=d,
                          val_images=cell.val_images, est_error=e)])
    return e

  def screen(st, v) -> float:
    """One draw's score, the same draw for every configuration (what the
    grids grow on); an old clamped score is replaced by its draw 0."""
    sc = scores[st][v]
    if cell.refines(method) and sc == R2R_LEGACY_CLAMP_DB:
      sc = scores[st][v] = error_db(draw_error(st, v, 0, sc))
    return sc

  means: Dict[tuple, float] = {}

  def mean_db(st, v, fit: bool):
    """The mean over ``R2R_DRAWS`` draws, as a score; None where a draw
    is missing and ``fit`` is False."""
    if (st, v) not in means:
      errs = [(draw_error if fit else cached_error)(st, v, d, scores[st][v])
              for d in range(R2R_DRAWS)]
      if any(e is None for e in errs):
        return None
      means[(st, v)] = error_db(float(np.mean(errs)))
    return means[(st, v)]

  def blind_plan():
    """The configurations the blind choice is made among, or the next fit
    it needs (("measure", st, v) or ("refine", st, v)).  The best
    ``R2R_REFINED`` by one draw (ties of the best too, and the recorded
    choice) are scored over ``R2R_DRAWS`` draws and join any already so
    scored; then, for the chosen start, values are added until the choice
    by the mean is settled (as ``grow`` decides on the means), each scored
    over as many draws."""
    ranked = sorted(((st, v) for st in starts for v in scores[st]
                     if np.isfinite(scores[st][v])),
                    key=lambda c: (-scores[c[0]][c[1]], starts.index(c[0]),
                                   c[1]))
    top = scores[ranked[0][0]][ranked[0][1]] if ranked else -np.inf
    among = ranked[:R2R_REFINED] + [
        c for c in ranked if scores[c[0]][c[1]] >= top - TIE_DB]
    if include is not None and include[1] in scores:
      old = (include[1], float(tables._fmt(include[0])))
      if np.isfinite(scores[old[0]].get(old[1], np.nan)):
        among.append(old)
    # Every configuration already scored over all draws competes too.
    among += [c for c in ranked if mean_db(*c, fit=False) is not None]
    among = list(dict.fromkeys(among))
    while True:
      for st, v in among:
        if mean_db(st, v, fit=False) is None:
          return ("refine", st, v)
      if not among:
        return among
      by_start = {}
      for st, v in among:
        by_start.setdefault(st, {})[v] = means[(st, v)]
      best = max(by_start, key=lambda st: (_best_score(by_start[st]),
                                           -starts.index(st)))
      more = [float(tables._fmt(m)) for m in grow(method.grid,
                                                  by_start[best])]
      if not more:
        return among
      for m in more:
        if m not in scores[best]:
          return ("measure", best, m)
      among += [(best, m) for m in more]

  by_label = {label(st): st for st in starts}
  for row in ctx.selection.rows:
    st = by_label.get(row["start"], False)
    if (st is not False and row["experiment"] == task.experiment
        and row["setting"] == task.setting and row["method"] == method.name
        and row["val_images"] == cell.val_images):
      measure(st, [float(row["hyper"])])
  for st in starts:
    measure(st, method.grid.values)
  if include is not None and include[1] in scores:
    measure(include[1], [include[0]])
  while True:
    for st in starts:
      for v in list(scores[st]):
        screen(st, v)
    ranked = sorted(starts, key=lambda st: -_best_score(scores[st]))
    todo = [(st, grow(method.grid, scores[st]))
            for st in ranked[:GROWN_STARTS]]
    todo = [(st, more) for st, more in todo if more]
    if todo:
      st, more = todo[0]
      measure(st, more[:1])  # then grow again from the new scores
      continue
    if not cell.refines(method):
      break
    plan = blind_plan()
    if isinstance(plan, list):
      break
    kind, st, v = plan
    if kind == "measure":
      measure(st, [v])
    else:
      mean_db(st, v, fit=True)
  if not cell.refines(method) or not plan:
    # (A blind method with no finite score at all ends here too, its score
    # not finite, for run_cell's warning.)
    best = max(starts, key=lambda st: _best_score(scores[st]))
    value = choose(scores[best])
    return value, best, scores[best][value], scores
  # The blind choice, by the mean, among the configurations scored so.
  chosen = {}
  for st, v in plan:
    chosen.setdefault(st, {})[v] = means[(st, v)]
  best = max(chosen, key=lambda st: (_best_score(chosen[st]),
                                     -starts.index(st)))
  value = choose(chosen[best])
  out = {st: dict(d) for st, d in scores.items()}
  for st, d in chosen.items():
    out[st].update(d)
  return value, best, chosen[best][value], out


def _best_score(s: Dict[float, float]) -> float:
  v = choose(s)
  return -np.inf if v is None or not np.isfinite(s[v]) else s[v]


def protocol_starts(protocol: Protocol, methods: Sequence[str],
                    can: Sequence[str]) -> Tuple[Start, ...]:
  """The protocol's starts that some flow method of ``methods`` can take
  in a task allowing ``can`` (a run of the ablation alone leaves out
  ours' continuation start)."""
  flow = [METHODS[m] for m in methods if METHODS[m].family == "flow"]
  return tuple(st for st in protocol.starts
               if any(offers(m, (st,), can) for m in flow))


def _checked_starts(methods, starts, task: Task):
  """``starts`` after the fairness check; raises ValueError for a start no
  method run here can take."""
  can = task_starts(task)
  check_fair(methods, starts, can)
  flow = [METHODS[m] for m in methods if METHODS[m].family == "flow"]
  for st in starts:
    if flow and not any(st in offers(m, (st,), can) for m in flow):
      why = (" (it needs flow noise and an invertible operator)"
             if st.kind == "noise_latent" else "")
      raise ValueError(f"inits: no method of {task.experiment} can take the "
                       f"start {st.label!r}{why}")
  return starts


class _Recorded:
  """What ``results.csv`` holds for one (task, method) cell, over the
  images ``ids`` of this run (test, then out-of-distribution)."""

  def __init__(self, ctx: Context, task: Task, ids, n_test: int, name: str):
    exps = (task.experiment, f"{task.experiment}_ood")
    self.rows = [r for r in ctx.results.rows if r["experiment"] in exps
                 and r["setting"] == task.setting and r["method"] == name]
    complete = all(ctx.results.done(
        experiment=exps[k >= n_test], setting=task.setting, method=name,
        image=i) for k, i in enumerate(ids))
    hypers = {r["hyper"] for r in self.rows}
    # The one choice recorded (None unless every image of this run has its
    # row, all with the same choice).
    self.hyper = hypers.pop() if complete and len(hypers) == 1 else None
    self.stray = sorted({r["image"] for r in self.rows} - set(ids))


def _rechosen(ctx: Context, task: Task, cell: _Cell, method: Method,
              offered, was: Optional[str]):
  """Tunes ``method`` over ``offered``; returns ``(value, start, val_score,
  scores, hyper)``, or None where the recorded choice ``was`` stands: chosen
  with a start not offered now (a probe's narrower --inits cannot judge
  it), or tied by the new choice within ``TIE_DB``."""
  by_label = {"" if s is None else s.label: s for s in offered}
  old = None
  if was is not None:
    old_v, old_s = tables.split_hyper(was)
    if old_s not in by_label:
      return None
    old = (float(old_v), by_label[old_s])
  # A blind selection ranks the old choice with the same number of draws.
  value, start, val_score, scores = tune(
      cell, method, offered, include=old if cell.refines(method) else None)
  hyper = (tables.hyper_label(value, start.label) if start is not None
           else tables._fmt(value))
  if was is not None and was != hyper:
    # ``tune`` read every cached score, the old choice's among them.
    old_score = scores[old[1]].get(float(tables._fmt(old[0])))
    if old_score is not None and old_score >= val_score - TIE_DB:
      hyper = was
  return None if hyper == was else (value, start, val_score, scores, hyper)


def same_test_recoveries(a: Method, b: Method) -> bool:
  """Whether two methods' test recoveries at one (value, start) are the
  same computation: flow MAPs with the same loss and noise model, chosen
  differently (ours and ours_heldout)."""
  return (a.family == b.family == "flow" and "asim" not in (a.name, b.name)
          and a.noise == b.noise and a.grid.symbol == b.grid.symbol)


def _twin_psnrs(ctx: Context, task: Task, protocol, method: Method, hyper,
                ids, n_test):
  """``(name, psnr by image)`` of a method recorded in this cell at
  ``hyper`` whose test recoveries are ``method``'s own computation
  (``same_test_recoveries``), or None."""
  for other in protocol.methods:
    if other == method.name or not same_test_recoveries(METHODS[other],
                                                         method):
      continue
    rec = _Recorded(ctx, task, ids, n_test, other)
    if rec.hyper == hyper:
      return other, {r["image"]: float(r["psnr"]) for r in rec.rows}
  return None


def _draw_cell_figure(ctx: Context, task: Task, cell: _Cell, protocol,
                      shown, n_test: int):
  """The cell's PNG with every method run now (``shown``) or kept from an
  earlier run."""
  img = ctx.images
  for m in protocol.methods:
    if m not in shown:
      kept = figs.load_shown(ctx.out, task.experiment, task.setting, m)
      if kept is not None:
        shown[m] = kept
  x_all = np.asarray(cell.x["test"])
  rows = figs.shown_rows(n_test, len(x_all))
  labels = [f"test {img.test_ids[i]}" if i < n_test else
            img.ood_ids[i - n_test] for i in rows]
  y_fig = figs.y_shown(cell.op["test"], cell.y["test"], x_all.shape[1:])
  figs.save_cell_figure(ctx.out, task.experiment, task.setting,
                        x_all[rows], np.asarray(y_fig)[rows], shown,
                        protocol.methods, row_labels=labels)


def run_cell(ctx: Context, task: Task, protocol: Optional[Protocol] = None):
  """Tunes and runs every method of ``ctx.options.methods`` that the
  experiment's protocol compares.  A cell already recorded is tuned again
  from the cached validation scores (measuring only configurations the
  protocol newly offers) and rerun only if its choice changed by more than
  a tie, its rows then replaced.  A cell chosen with a start not offered
  now is kept, and one recorded for images this run does not cover is
  refused rather than left with two choices."""
  from mapflow import metrics
  protocol = protocol or PROTOCOLS[task.experiment]
  img, opts = ctx.images, ctx.options
  methods = [m for m in opts.methods if m in protocol.methods]
  starts = _checked_starts(methods, opts.starts or protocol_starts(
      protocol, methods, task_starts(task)), task)
  n_test = len(img.x_test)
  ids = [str(int(i)) for i in img.test_ids] + (
      list(img.ood_ids) if task.y_ood is not None else [])
  cell = _Cell(ctx, task, protocol)
  shown = {}
  bar = None
  if opts.bar and methods:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(methods), desc=f"{task.experiment} {task.setting}",
               unit="method", dynamic_ncols=True, leave=True)
  for name in methods:
    method = METHODS[name]
    if bar is not None:
      bar.set_postfix_str(name)
    offered = (list(offers(method, starts, task_starts(task)))
               if method.family == "flow" else [None])
    if not offered:
      raise ValueError(f"inits: none of {[s.label for s in starts]} can be "
                       f"taken by {name} in {task.experiment}")
    rec = _Recorded(ctx, task, ids, n_test, name)
    new = _rechosen(ctx, task, cell, method, offered, rec.hyper)
    if new is not None:
      value, start, val_score, scores, hyper = new
      if rec.stray:
        raise ValueError(
            f"{task.experiment} {task.setting} {name}: the folder records "
            f"this cell for images this run does not cover "
            f"({len(rec.stray)}, e.g. {rec.stray[0]}); choosing it again "
            "would leave two choices in one cell.  Rerun with the folder's "
            "--num-test (and without --no-ood if it has out-of-distribution "
            "rows), or use another --out")
      # The same computation already recorded here (ours_heldout choosing
      # ours's configuration) is read, not run again: the same numbers,
      # and about the cost of a validation score saved.
      twin = _twin_psnrs(ctx, task, protocol, method, hyper, ids, n_test)
      kept = (figs.copy_shown(ctx.out, task.experiment, task.setting,
                              twin[0], name)
              if twin is not None and opts.figures else None)
      if twin is not None and (kept is not None or not opts.figures):
        p = np.asarray([twin[1][i] for i in ids])
        if kept is not None:
          shown[name] = kept
      else:
        twin = None
        x_hat = cell.solve(method, start, value, "test")
        p = np.asarray(metrics.psnr(cell.x["test"], x_hat))
        if opts.figures:
          # Kept before the rows, so a kill in between redraws from them.
          shown[name] = figs.keep_shown(ctx.out, task.experiment,
                                        task.setting, name, x_hat, n_test)
      rows = [{"experiment": task.experiment if k < n_test
               else f"{task.experiment}_ood", "setting": task.setting,
               "method": name, "hyper": hyper, "image": i, "psnr": float(v)}
              for k, (i, v) in enumerate(zip(ids, p))]
      ctx.results.add(rows)
      tried = sum(len(s) for s in scores.values())
      ctx.say(f"{task.experiment} {task.setting} {name}: "
              f"{method.grid.symbol} {value:g}"
              + (f" from {start.label}" if start else "") +
              f" ({tried} tried), val "
              + (f"{val_score:.2f} dB" if not val_score > 100.0 else
                 f"estimated error {error_of_db(val_score):.3g}")
              + ", test "
              f"{p[:n_test].mean():.2f} dB"
              + ("" if twin is None else f" (as {twin[0]}'s, the same "
                 "recoveries)")
              + ("" if rec.hyper is None else
                 f" (re-chosen; was {rec.hyper})"))
      if not np.isfinite(val_score):
        ctx.say(f"WARNING: {task.experiment} {task.setting} {name}: no "
                "configuration gave a finite validation score (the "
                "recovery diverged; offer other starts with --inits)")
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  if opts.figures and (shown or figs.figure_is_stale(
      ctx.out, task.experiment, task.setting, protocol.methods)):
    _draw_cell_figure(ctx, task, cell, protocol, shown, n_test)


# ---------------------------------------------------------------------------
# The tasks.

def _split_keys(seed, *tags):
  import jax
  key = jax.random.PRNGKey(seed)
  for t in tags:
    key = jax.random.fold_in(key, int(t))
  return jax.random.split(key)


def _ood(ctx: Context, measure, key):
  """Measurements of the out-of-distribution images, on their own key (so
  the test images' noise does not depend on whether OOD images run)."""
  import jax
  if ctx.images.x_ood is None:
    return None
  return measure(ctx.images.x_ood, jax.random.fold_in(key, 0x00D))


def denoising_tasks(ctx: Context, kind: str, scales: Sequence[float]):
  """SINUSOIDAL or RADIAL: ``y = x + delta`` at each noise scale."""
  from mapflow import operators as ops
  from recover.paper.protocol import structured_noise
  img = ctx.images
  shape = tuple(img.x_test.shape[1:])
  for s in scales:
    noise = structured_noise(kind, shape, float(s))
    kv, kt = _split_keys(ctx.options.seed, round(s * 1e4))
    sample = lambda x, k: x + noise.sample(seed=k, sample_shape=(len(x),))
    yield Task(kind, f"{float(s):g}", ops.identity(), noise,
               sample(img.x_val, kv), sample(img.x_test, kt),
               _ood(ctx, sample, kt))


def digit_noise_task(ctx: Context, noise_prior, noise_params, digits_val,
                     digits_test, digits_spare=None) -> Task:
  """``y = 0.5 x + delta``, delta a held-out handwritten digit.  The
  ablation's iid N(0, σ²) has the digits' mean squared pixel value as σ²
  (the same average power); BM3D denoises y and rescales by 1/0.5.
  ``digits_spare``: further held-out digits that no measurement uses, the
  noise-only examples of a blind selection (``Task.noise_examples``)."""
  from mapflow import noise as noise_lib
  from mapflow import operators as ops
  img = ctx.images
  dv, dt = np.asarray(digits_val), np.asarray(digits_test)
  if len(dv) < len(img.x_val) or len(dt) < len(img.x_test):
    raise ValueError(f"digits: need {len(img.x_val)} + {len(img.x_test)}, "
                     f"got {len(dv)} + {len(dt)}")
  sigma = float(np.sqrt(np.mean(np.concatenate([dv, dt]) ** 2)))
  shape = tuple(img.x_test.shape[1:])
  return Task("digits", "0.5x+digit", ops.scale(0.5),
              noise_lib.from_flow(noise_prior, noise_params),
              0.5 * img.x_val + dv[:len(img.x_val)],
              0.5 * img.x_test + dt[:len(img.x_test)],
              ablation_noise=noise_lib.gaussian(sigma, shape),
              bm3d_scale=sigma,
              noise_examples=(None if digits_spare is None
                              else np.asarray(digits_spare)))


def subpixel_task(ctx: Context, keep: float = 0.75, sigma: float = 0.01,
                  per_image: bool = True) -> Task:
  """``y = M_i * x_i``, each image its own ``M_i ~ Bernoulli(keep)``
  (drawn from the seed and the image's id in the test split, so an image
  keeps its mask whatever batch it is in), noiseless: the MAP's noise
  model is iid N(0, sigma^2) with a small ``sigma`` (a data-fit weight).
  ``per_image=False`` is the first protocol's: one mask for every image."""
  import jax
  import jax.numpy as jnp
  from mapflow import noise as noise_lib
  from mapflow import operators as ops
  img = ctx.images
  shape = tuple(img.x_test.shape[1:])
  key, _ = _split_keys(ctx.options.seed, round(keep * 1e4))
  if not per_image:
    op = ops.mask(key, shape, keep)
    return Task("subpixel", f"keep={keep:g}", op,
                noise_lib.gaussian(sigma, shape), op(jnp.asarray(img.x_val)),
                op(jnp.asarray(img.x_test)))

  def masks(ids):
    return ops.batched([ops.mask(jax.random.fold_in(key, int(i)), shape,
                                 keep) for i in ids])
  op_val, op_test = masks(img.val_ids), masks(img.test_ids)
  return Task("subpixel", f"keep={keep:g}", op_val,
              noise_lib.gaussian(sigma, shape), op_val(jnp.asarray(img.x_val)),
              op_test(jnp.asarray(img.x_test)), test_operator=op_test)


def one_bit_tasks(ctx: Context, settings: Sequence[Tuple[int, float]],
                  max_m: int):
  """Noisy 1-bit CS, ``y = sign(A (x - 0.5)) + delta`` for (m, s) settings.
  One matrix of ``max_m`` rows serves every m (its first m rows), and one
  noise draw per scale, so settings along m are nested designs."""
  import jax
  from mapflow import noise as noise_lib
  from mapflow import operators as ops
  img = ctx.images
  shape = tuple(img.x_test.shape[1:])
  a = ops.gaussian(jax.random.PRNGKey(ctx.options.seed + 101), max_m, shape)
  for m, s in settings:
    if not 0 < m <= max_m:
      raise ValueError(f"m: got {m}, expected 1..{max_m}")
    noise = noise_lib.sinusoidal_1d(max_m, float(s))
    op = ops.one_bit(ops.with_active(a, m), 0.5)
    kv, kt = _split_keys(ctx.options.seed, round(s * 1e4))
    sample = lambda x, k: op(x) + noise.sample(seed=k, sample_shape=(len(x),))
    yield Task("one_bit", f"m={m},s={float(s):g}", op, noise,
               sample(img.x_val, kv), sample(img.x_test, kt),
               _ood(ctx, sample, kt))
