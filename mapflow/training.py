"""Maximum-likelihood training of flow priors, resumable step for step.

Everything a step needs is a function of ``(state, step)``: the batch at step
``s`` is slice ``s mod E`` of epoch ``s // E``'s permutation, seeded by
``(seed, epoch)``, and the dequantisation noise uses
``fold_in(key(seed), s)``.  So a run killed and resumed from its last
checkpoint replays exactly what an uninterrupted run would have done.

Loss per batch (paper, App. C):

    bits/dim(x) + wn_l2 * sum(weight-norm scales^2)

with Adam, a learning rate halved every ``halve_every`` steps, and gradients
clipped to ``max_grad_norm``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mapflow import checkpoint as ckpt
from mapflow import io as io_lib
from mapflow import sharding
from mapflow import xla
from mapflow.flows import dequantize, from_config, preset, weightnorm_l2


@dataclasses.dataclass(frozen=True)
class LogSchedule:
  """When a training run evaluates, checkpoints, samples and logs.

  Attributes:
    eval_every: steps between test bits/dim evaluations (0: only at the end).
    eval_batch: images per evaluation batch.
    eval_limit: evaluate on the first N test images (0: all).
    checkpoint_every: steps between checkpoints.
    sample_every: steps between sample grids (0: only at the end).
    log_every: steps between metric lines.
  """

  eval_every: int = 1000
  eval_batch: int = 500
  eval_limit: int = 0
  checkpoint_every: int = 200
  sample_every: int = 1000
  log_every: int = 20


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Hyperparameters of a training run (flow config aside).

  Attributes:
    batch_size: images per step.
    learning_rate: Adam's initial learning rate.
    halve_every: steps between halvings of the learning rate.
    max_grad_norm: global-norm gradient clipping.
    wn_l2: L2 penalty on the weight-norm scales.
    seed: seeds init, data order and dequantisation.
    log: when the run evaluates, checkpoints, samples and logs.
    check_resume: refuse (``CheckpointError``) to resume a run begun with
      other step settings or other training images (``check_resumable``);
      False resumes anyway (e.g. images decoded a bit differently on
      another machine), and the checkpoints then record the new ones.
      Not a step setting: it may differ between a run and its resumption.
  """

  batch_size: int = 64
  learning_rate: float = 1e-3
  halve_every: int = 4000
  max_grad_norm: float = 100.0
  wn_l2: float = 5e-5
  seed: int = 0
  log: LogSchedule = LogSchedule()
  check_resume: bool = True


class TrainState(NamedTuple):
  params: object
  opt_state: object
  step: jax.Array


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
  schedule = optax.exponential_decay(tc.learning_rate, tc.halve_every, 0.5,
                                     staircase=True)
  return optax.chain(optax.clip_by_global_norm(tc.max_grad_norm),
                     optax.adam(schedule))


def _check_batch(tc, x_train):
  """Before anything is written: a batch needs that many images."""
  if tc.batch_size > len(x_train):
    raise ValueError(f"batch_size: got {tc.batch_size}, more than the "
                     f"{len(x_train)} training images")


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
  """Indices of the batch at ``step``: a fresh permutation every epoch."""
  if isinstance(batch_size, bool) or not isinstance(
      batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size: got {batch_size!r}, expected an int >= 1")
  if isinstance(step, (bool, np.bool_)) or np.ndim(step) != 0 or \
      not np.issubdtype(np.asarray(step).dtype, np.integer) or step < 0:
    raise ValueError(f"step: got {step!r}, expected an int >= 0")
  per_epoch = n // batch_size
  if per_epoch < 1:
    raise ValueError(f"batch_size: got {batch_size}, larger than the "
                     f"{n} training images")
  epoch, i = divmod(int(step), per_epoch)
  perm = np.random.RandomState([seed, epoch]).permutation(n)
  return perm[i * batch_size:(i + 1) * batch_size]


def make_train_step(flow, tc: TrainConfig, optimizer):
  """A jitted ``(state, x_uint8) -> (state, metrics)``; buffers donated."""
  num_bits = flow.config.num_bits
  dim = math.prod(flow.config.image_shape)
  base_key = jax.random.PRNGKey(tc.seed)

  def loss_fn(params, x):
    bpd = -flow.log_prob(params, x) / (dim * math.log(2.0)) + num_bits
    reg = weightnorm_l2(params)
    return jnp.mean(bpd) + tc.wn_l2 * reg, jnp.mean(bpd)

  def step_fn(state: TrainState, x_uint8):
    key = jax.random.fold_in(base_key, state.step)
    x = dequantize(x_uint8, num_bits, key)
    (loss, bpd), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, x)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "bpd": bpd, "grad_norm": optax.global_norm(grads)}
    return TrainState(params, opt_state, state.step + 1), metrics

  return jax.jit(step_fn, donate_argnums=0,
                 compiler_options=xla.step_options())


class _JittedFlow(NamedTuple):
  bits_per_dim: Callable
  sample: Callable


@functools.lru_cache(maxsize=16)
def jitted_flow(flow) -> _JittedFlow:
  """Compiled evaluation and sampling of a flow, built once per flow (a new
  ``jax.jit`` per evaluation would retrace every time)."""
  return _JittedFlow(jax.jit(flow.bits_per_dim),
                     jax.jit(flow.sample, static_argnums=(2, 3)))


def evaluate_bpd(flow, params, x_uint8, batch: int, seed: int = 0,
                 progress: Optional[Callable] = None) -> float:
  """Mean bits/dim over ``x_uint8`` (N, H, W, C) 8-bit images, uniformly
  dequantised (fixed key), ``batch`` at a time."""
  x = np.asarray(x_uint8)
  want = tuple(flow.config.image_shape)
  if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want or not len(x):
    raise ValueError(f"x_uint8: got shape {x.shape}, expected a non-empty "
                     f"batch (N,) + {want}")
  if not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() > 255:
    raise ValueError(f"x_uint8: got {x.dtype} values in [{x.min()}, "
                     f"{x.max()}], expected 8-bit integers 0..255")
  if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) \
      or batch < 1:
    raise ValueError(f"batch: got {batch!r}, expected an int >= 1")
  fn = jitted_flow(flow).bits_per_dim
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 2**30)
  total, count = 0.0, 0
  for i in range(0, len(x_uint8), batch):
    xb = x_uint8[i:i + batch]
    total += float(jnp.sum(fn(params, xb, jax.random.fold_in(key, i))))
    count += len(xb)
    if progress is not None:
      progress(count)
  return total / count


def init_state(flow, tc: TrainConfig, x_train, optimizer) -> TrainState:
  idx = batch_indices(0, len(x_train), tc.batch_size, tc.seed)
  x0 = dequantize(x_train[idx], flow.config.num_bits,
                  jax.random.PRNGKey(tc.seed + 1))
  params = flow.init(jax.random.PRNGKey(tc.seed), x0)
  return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def data_fingerprint(x) -> dict:
  """What identifies a training set: its count, shape, dtype and the
  sha256 of its bytes (about 0.1 s for Fashion-MNIST's 47 MB)."""
  x = np.ascontiguousarray(x)
  return {"num": int(x.shape[0]), "shape": list(x.shape[1:]),
          "dtype": str(x.dtype), "sha256": hashlib.sha256(x).hexdigest()}


# The fields that decide what a step does; the log schedule only decides
# what is written, so it may change between a run and its resumption.
_STEP_FIELDS = ("batch_size", "learning_rate", "halve_every", "max_grad_norm",
                "wn_l2", "seed")


def _plain(v):
  """``v`` as JSON writes it (NumPy scalars as Python numbers)."""
  if isinstance(v, dict):
    return {k: _plain(x) for k, x in v.items()}
  if isinstance(v, np.integer):
    return int(v)
  if isinstance(v, np.floating):
    return float(v)
  return v


class ResumeError(ckpt.CheckpointError):
  """A resume refused: the run in ``workdir`` began with other step
  settings (``changed``: field -> (then, now)) or other training images
  (``images``: the two ``data_fingerprint``s).  Its text names the
  fields; a command line with other flags for them words it its own way
  with ``message``."""

  def __init__(self, workdir, changed: Optional[dict] = None,
               images: Optional[tuple] = None):
    self.workdir, self.changed, self.images = workdir, changed or {}, images
    super().__init__(self.message())

  def message(self, flag: str = "--workdir",
              describe: Optional[dict] = None) -> str:
    """The refusal, pointing at ``flag``; ``describe`` maps a field to
    ``(then, now) -> text`` in place of ``field=then (now now)``."""
    describe = describe or {}
    if self.changed:
      diff = ", ".join(describe[k](a, b) if k in describe
                       else f"{k}={a!r} (now {b!r})"
                       for k, (a, b) in self.changed.items())
      return (f"workdir: {self.workdir} holds a run made with {diff}; a "
              "resumed run must keep the settings it began with, so give "
              f"them again, or use another {flag}")
    was, now = self.images
    return (f"workdir: {self.workdir} holds a run trained on other images "
            f"({was['num']} of shape {tuple(was['shape'])}, sha256 "
            f"{was['sha256'][:12]}; these: {now['num']} of shape "
            f"{tuple(now['shape'])}, sha256 {now['sha256'][:12]}); give it "
            f"the images it began with, or use another {flag}")


def check_resumable(workdir, extra: dict, settings: dict,
                    data: Optional[dict], steps: int) -> None:
  """Raises ``ResumeError`` when the checkpoint in ``workdir``, whose
  metadata is ``extra``, was made with other step ``settings`` or other
  training images (``data``, a ``data_fingerprint``) than the run about
  to resume it towards ``steps``.  Resuming would quietly carry on a
  different run.  A run already at ``steps`` trains nothing, so its
  settings are not compared (its images still say what the model is);
  checkpoints from before these were recorded are not checked for what
  they lack."""
  saved = extra.get("train_config") or {}
  if int(extra.get("step", 0)) < steps:
    changed = {k: (saved[k], v) for k, v in settings.items()
               if k in saved and saved[k] != v}
    if changed:
      raise ResumeError(workdir, changed=changed)
  was = extra.get("data")
  if was is not None and data is not None and was != data:
    raise ResumeError(workdir, images=(was, data))


def _check_same_run(workdir, config, what: tuple, settings: dict, data: dict,
                    steps: int, check: bool = True) -> dict:
  """The metadata of ``workdir``'s state checkpoint, after refusing one of
  another config (``what``: how the message names the checkpoint, and this
  run's kind with a ``{}`` for its config) and, with
  ``check``, one ``check_resumable`` refuses."""
  state = Path(workdir) / "state"
  # The config first: another model's state would fail to restore with a
  # message about missing leaves instead.
  saved_cfg = ckpt.read_config(state)
  if saved_cfg != config:
    raise ckpt.CheckpointError(
        f"workdir: {workdir} holds {what[0]} of {saved_cfg}, not of "
        f"{what[1].format(config)}; use another --workdir")
  extra = ckpt.read_meta(state).get("extra", {})
  if check:
    check_resumable(workdir, extra, _plain(settings), data, steps)
  return extra


def save_state(workdir: Path, state: TrainState, flow_config, tc,
               data: Optional[dict] = None):
  """Atomic checkpoints: the full state, and the params alone for loading.
  ``data``: the training set's ``data_fingerprint``, checked on resume."""
  extra = {"step": int(state.step),
           "train_config": _plain(dataclasses.asdict(tc))}
  if data is not None:
    extra["data"] = data
  ckpt.save(workdir / "state", state._asdict(), flow_config, extra)
  ckpt.save(workdir / "params", state.params, flow_config, extra)


def restore_state(workdir: Path, template: TrainState) -> Optional[TrainState]:
  path = workdir / "state"
  if not path.exists():
    return None
  d = ckpt.restore(path, template._asdict())
  return TrainState(**d)


def read_jsonl(path: Path) -> list:
  """The records of a JSON-lines log; a line a kill tore is skipped."""
  if not Path(path).exists():
    return []
  out = []
  for line in Path(path).read_text().splitlines():
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return out


def _trim_log(path: Path, step: int):
  """Drops log lines past ``step`` (written after the last checkpoint), and
  any a kill tore."""
  if not path.exists():
    return
  keep = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
  io_lib.write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))


def _record_eval(path: Path, rec: dict):
  """Adds an evaluation to ``evals.jsonl``, replacing one at the same step
  (a rerun of a finished run evaluates its last step again)."""
  keep = [r for r in read_jsonl(path) if r.get("step") != rec["step"]]
  io_lib.write_text_atomic(path, "".join(json.dumps(r) + "\n"
                                         for r in keep + [rec]))


def check_run(tc: TrainConfig, steps, time_budget=None) -> None:
  """Raises ValueError naming the first bad field of ``tc`` (and its
  ``log``), ``steps`` or ``time_budget``, with what it got and expected."""
  def need(name, value, ok, expected):
    if isinstance(value, bool) or not ok(value):
      raise ValueError(f"{name}: got {value!r}, expected {expected}")

  is_int = lambda v: isinstance(v, (int, np.integer))
  is_num = lambda v: isinstance(v, (int, float, np.number)) and np.isfinite(v)
  need("steps", steps, lambda v: is_int(v) and v >= 1, "an int >= 1")
  need("time_budget", time_budget,
       lambda v: v is None or (is_num(v) and v > 0),
       "a positive number of seconds (or None: no budget)")
  for name in ("batch_size", "halve_every"):
    need(name, getattr(tc, name), lambda v: is_int(v) and v >= 1,
         "an int >= 1")
  for name in ("learning_rate", "max_grad_norm"):
    need(name, getattr(tc, name), lambda v: is_num(v) and v > 0,
         "a positive number")
  need("wn_l2", tc.wn_l2, lambda v: is_num(v) and v >= 0,
       "a number >= 0")
  # PRNGKey keeps 32 bits: 2**32 would draw what 0 draws.
  need("seed", tc.seed, lambda v: is_int(v) and 0 <= v < 2 ** 32,
       "an int in [0, 2**32)")
  for f in dataclasses.fields(tc.log):
    low = 1 if f.name in ("eval_batch", "checkpoint_every",
                          "log_every") else 0
    need(f.name, getattr(tc.log, f.name),
         lambda v, low=low: is_int(v) and v >= low, f"an int >= {low}")


def train(flow_config, tc: TrainConfig, x_train, x_test, workdir,
          steps: int, time_budget: Optional[float] = None,
          progress: bool = True, on_eval: Optional[Callable] = None,
          devices=None):
  """Trains (or resumes) a flow in ``workdir`` until ``steps`` or the budget.

  Args:
    flow_config: a ``RealNVPConfig`` or ``GlowConfig``.
    tc: the ``TrainConfig``.
    x_train, x_test: uint8 arrays (N, H, W, C).
    workdir: checkpoints (``state``, ``params``), ``metrics.jsonl``,
      ``samples_XXXXXX.png`` and ``eval.json`` go here.
    steps: total steps of the run (a resumed run continues to this count).
    time_budget: stop (with a checkpoint) after this many seconds.
    progress: show a tqdm bar.
    on_eval: called with each evaluation's dict.
    devices: data parallelism: each batch is split over these devices and
      the state replicated (default all of ``jax.devices()``; the batch
      size must be a multiple of their number).

  Returns:
    The final ``TrainState``.
  """
  check_run(tc, steps, time_budget)
  _check_batch(tc, x_train)
  workdir = Path(workdir)
  # One writer per workdir; what killed writers left behind goes first.
  with io_lib.FolderLock(workdir, what="workdir"):
    io_lib.remove_orphan_dirs(workdir / "state")
    io_lib.remove_orphan_dirs(workdir / "params")
    io_lib.remove_orphans(workdir, ["metrics.jsonl", "evals.jsonl"])
    return _train(flow_config, tc, x_train, x_test, workdir, steps,
                  time_budget, progress, on_eval, devices)


def _train(flow_config, tc, x_train, x_test, workdir, steps, time_budget,
           progress, on_eval, devices):
  from mapflow.viz import save_grid
  shape = tuple(flow_config.image_shape)
  for name, x in (("x_train", x_train), ("x_test", x_test)):
    if x.dtype != np.uint8 or tuple(x.shape[1:]) != shape:
      raise ValueError(f"{name}: got {x.dtype} {tuple(x.shape)}, expected "
                       f"uint8 (N, {', '.join(map(str, shape))})")
  flow = from_config(flow_config)
  optimizer = make_optimizer(tc)
  data = data_fingerprint(x_train)
  state = init_state(flow, tc, x_train, optimizer)
  if (Path(workdir) / "state").exists():
    _check_same_run(workdir, flow_config, ("a run", "{}"),
                    {k: getattr(tc, k) for k in _STEP_FIELDS}, data, steps,
                    tc.check_resume)
  restored = restore_state(workdir, state)
  if restored is not None:
    state = restored
  mesh = sharding.batch_mesh(devices)
  if tc.batch_size % mesh.size:
    raise ValueError(f"batch_size: got {tc.batch_size}, expected a multiple "
                     f"of the {mesh.size} devices it is split over")
  state = sharding.replicate(state, mesh)
  start = int(state.step)
  metrics_path = workdir / "metrics.jsonl"
  _trim_log(metrics_path, start)
  _trim_log(workdir / "evals.jsonl", start)
  step_fn = make_train_step(flow, tc, optimizer)
  t0 = time.time()
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=steps, initial=start, desc="train", unit="step",
               dynamic_ncols=True)

  def do_eval(st):
    xt = x_test[:tc.log.eval_limit] if tc.log.eval_limit else x_test
    bpd = evaluate_bpd(flow, st.params, xt, tc.log.eval_batch, tc.seed)
    rec = {"step": int(st.step), "test_bpd": bpd, "num_test": len(xt),
           "wall_s": time.time() - t0}
    _record_eval(workdir / "evals.jsonl", rec)
    if on_eval:
      on_eval(rec)
    return rec

  def do_samples(st):
    xs = jitted_flow(flow).sample(st.params, jax.random.PRNGKey(tc.seed + 7),
                              64, 0.8)
    save_grid(workdir / f"samples_{int(st.step):06d}.png", np.asarray(xs))

  step = start
  last = {}
  # Ctrl-C / SIGTERM stop the loop between steps: an interrupt inside a step
  # would leave the donated state half-replaced and unsaveable.
  stop = []
  previous = {}

  def request_stop(signum, frame):
    del frame
    stop.append(signum)
    if bar is not None:
      bar.write("stopping after this step (checkpointing)...")

  if threading.current_thread() is threading.main_thread():
    for sig in (signal.SIGINT, signal.SIGTERM):
      previous[sig] = signal.signal(sig, request_stop)
  try:
    while step < steps and not stop:
      if time_budget is not None and time.time() - t0 > time_budget:
        break
      idx = batch_indices(step, len(x_train), tc.batch_size, tc.seed)
      state, m = step_fn(state, sharding.shard_along(x_train[idx], mesh))
      step += 1
      if step % tc.log.log_every == 0 or step == steps:
        last = {k: float(v) for k, v in m.items()}
        rec = {"step": step, **last, "wall_s": time.time() - t0}
        with open(metrics_path, "a") as f:
          f.write(json.dumps(rec) + "\n")
        if bar is not None:
          bar.set_postfix(bpd=f"{last['bpd']:.3f}")
      if bar is not None:
        bar.update(1)
      # Evaluate before checkpointing: a kill in between resumes from the
      # step before, which redoes this step and its evaluation; the other
      # order would resume past an evaluation never written.
      if tc.log.sample_every and step % tc.log.sample_every == 0:
        do_samples(state)
      if tc.log.eval_every and step % tc.log.eval_every == 0:
        do_eval(state)
      if step % tc.log.checkpoint_every == 0:
        save_state(workdir, state, flow_config, tc, data)
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
    # Whatever stopped the loop (end, budget, signal, error), keep finished
    # steps; a state whose buffers were donated mid-step cannot be saved,
    # and then the last periodic checkpoint stands.
    if not any(a.is_deleted() for a in jax.tree_util.tree_leaves(state)):
      if int(state.step) > start or restored is None:
        save_state(workdir, state, flow_config, tc, data)
    if bar is not None:
      bar.close()
  if stop:
    raise KeyboardInterrupt(f"stopped by signal {stop[0]} at step {step}; "
                            "checkpointed")
  if step >= steps:
    if not (workdir / f"samples_{step:06d}.png").exists():
      do_samples(state)
    if not any(r.get("step") == step
               for r in read_jsonl(workdir / "evals.jsonl")):
      do_eval(state)
  return state


# Named training runs: flow preset, data and hyperparameters.
TRAIN_PRESETS = {
    "fashion_mnist_realnvp": ("realnvp_fmnist_cpu", "fashion_mnist",
                              TrainConfig(batch_size=64, learning_rate=1e-3,
                                          halve_every=4000)),
    "digits_realnvp": ("realnvp_fmnist_cpu", "digits",
                       TrainConfig(batch_size=64, learning_rate=1e-3,
                                   halve_every=2000,
                                   log=LogSchedule(eval_every=500,
                                                   sample_every=500))),
    "fashion_mnist_glow": ("glow_fmnist_small", "fashion_mnist",
                           TrainConfig(batch_size=64, learning_rate=1e-3,
                                       halve_every=4000)),
    # Paper, Table 1 (MNIST): batch 128, lr 1e-3 halved every 40 epochs
    # (40 * 468 steps), 200 epochs, max grad norm 100, WN L2 5e-5.
    "mnist_paper": ("realnvp_mnist_paper", "mnist",
                    TrainConfig(batch_size=128, learning_rate=1e-3,
                                halve_every=40 * 468, max_grad_norm=100.0,
                                wn_l2=5e-5)),
    # Paper, Table 1 (CelebA-HQ 64): batch 16, lr 5e-4 halved every 60
    # epochs (60 * 1687 steps), 300 epochs, max grad norm 500, WN L2 1e-5.
    "celebahq64_paper": ("realnvp_celebahq64_paper", "celeb_a_hq",
                         TrainConfig(batch_size=16, learning_rate=5e-4,
                                     halve_every=60 * 1687,
                                     max_grad_norm=500.0, wn_l2=1e-5)),
}


def train_preset(name: str):
  """``(flow_config, data_name, TrainConfig)`` of a named training run."""
  if name not in TRAIN_PRESETS:
    raise ValueError(f"preset: got {name!r}, expected one of "
                     f"{sorted(TRAIN_PRESETS)}")
  flow_name, data_name, tc = TRAIN_PRESETS[name]
  return preset(flow_name), data_name, tc


# Bora et al.'s VAE: Adam at a constant rate (the schedule, clipping and
# weight-norm fields of a TrainConfig do not apply to it).
VAE_TRAINING = TrainConfig(batch_size=100, learning_rate=1e-3,
                           log=LogSchedule(checkpoint_every=1000))


def train_vae(cfg, x_train, x_test, workdir, steps: int,
              tc: Optional[TrainConfig] = None, progress: bool = True):
  """Trains (or resumes) the VAE on uint8 images; returns (params, test_elbo).

  ``tc`` (default ``VAE_TRAINING``): its batch size, learning rate, seed,
  ``log.checkpoint_every`` and ``check_resume`` apply.  A resume must
  repeat the batch size, learning rate, seed and training images the run
  began with (``check_resumable``), unless ``tc.check_resume`` is False.

  Same determinism as flow training: the batch and noise at step ``s`` are
  functions of ``(seed, s)``, so a resumed run equals an uninterrupted one.
  Images are scaled to [0, 1] (x / 255) and scored with the Bernoulli
  likelihood, as in Bora et al.  One process per workdir (a lock).
  """
  tc = VAE_TRAINING if tc is None else tc
  if not isinstance(tc, TrainConfig):
    raise TypeError(f"tc: got {type(tc).__name__}, expected a "
                    "mapflow.training.TrainConfig")
  check_run(tc, steps)
  _check_batch(tc, x_train)
  workdir = Path(workdir)
  with io_lib.FolderLock(workdir, what="workdir"):
    for name in ("state", "params"):
      io_lib.remove_orphan_dirs(workdir / name)
    io_lib.remove_orphans(workdir, ["eval.json"])
    return _train_vae(cfg, x_train, x_test, workdir, steps, tc, progress)


def _train_vae(cfg, x_train, x_test, workdir, steps, tc, progress):
  batch_size, learning_rate, seed = tc.batch_size, tc.learning_rate, tc.seed
  checkpoint_every = tc.log.checkpoint_every
  from mapflow import vae as vae_lib
  vae = vae_lib.VAE(cfg)
  elbo = vae_lib.elbo
  opt = optax.adam(learning_rate)
  params = vae_lib.init(cfg, jax.random.PRNGKey(seed))
  state = {"params": params, "opt_state": opt.init(params),
           "step": jnp.zeros((), jnp.int32)}
  settings = _plain({"batch_size": batch_size,
                     "learning_rate": learning_rate, "seed": seed})
  extra = {"train_config": settings, "data": data_fingerprint(x_train)}
  restored = (workdir / "state").exists()
  if restored:
    record = _check_same_run(workdir, cfg, ("a checkpoint", "this VAE ({})"),
                             settings, extra["data"], steps, tc.check_resume)
    state = ckpt.restore(workdir / "state", state)
  base = jax.random.PRNGKey(seed + 1)

  @jax.jit
  def step_fn(state, xb):
    key = jax.random.fold_in(base, state["step"])
    x = xb.astype(jnp.float32) / 255.0
    loss, g = jax.value_and_grad(
        lambda p: -jnp.mean(elbo(vae, p, x, key)))(state["params"])
    upd, os_ = opt.update(g, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], upd),
            "opt_state": os_, "step": state["step"] + 1}, loss

  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=steps, initial=int(state["step"]), desc="vae")
  s = start = int(state["step"])
  try:
    while s < steps:
      idx = batch_indices(s, len(x_train), batch_size, seed)
      state, loss = step_fn(state, jnp.asarray(x_train[idx]))
      s += 1
      if bar is not None:
        bar.update(1)
        if s % 50 == 0:
          bar.set_postfix(neg_elbo=f"{float(loss):.1f}")
      if s % checkpoint_every == 0:
        ckpt.save(workdir / "state", state, cfg, {**extra, "step": s})
  finally:
    # A resume that trained nothing leaves the checkpoint (and the
    # settings it records) as it was.
    if s > start or not restored:
      record = {**extra, "step": s}
      ckpt.save(workdir / "state", state, cfg, record)
    if bar is not None:
      bar.close()
  ev = jax.jit(lambda p, x, k: elbo(vae, p, x.astype(jnp.float32) / 255.0, k))
  key = jax.random.PRNGKey(seed + 2)
  vals = [ev(state["params"], jnp.asarray(x_test[i:i + 1000]),
             jax.random.fold_in(key, i))
          for i in range(0, len(x_test), 1000)]
  test_elbo = float(jnp.mean(jnp.concatenate(vals)))
  ckpt.save(workdir / "params", state["params"], cfg,
            {**record, "step": s, "test_elbo_nats": test_elbo})
  io_lib.write_json_atomic(workdir / "eval.json",
                         {"step": s, "test_elbo_nats": test_elbo,
                          "num_test": int(len(x_test))})
  return state["params"], test_elbo
