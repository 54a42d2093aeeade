"""The benchmark sections.  Each takes a ``Context`` and returns a dict of
measured figures (seconds are medians over ``repeats`` unless noted)."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mapflow as mf
from mapflow import objectives


TINY_28 = mf.flows.RealNVPConfig(image_shape=(28, 28, 1), num_scales=2,
                                 num_blocks=1, hidden_channels=4,
                                 couplings_per_scale=1, final_couplings=1)


class Context:
  """The prior, images and optimiser every section shares."""

  def __init__(self, cfg: dict, save_partial: Callable[[dict], None] = None):
    self.cfg = cfg
    # Long sections hand unfinished results here, so a stop keeps them.
    self.save_partial = save_partial or (lambda res: None)
    self.images = jnp.asarray(mf.data.demo_images()["fashion_mnist"],
                              jnp.float32) / 255.0
    self.optimizer = optax.adam(0.03)
    self.base_config = mf.flows.preset("realnvp_fmnist_cpu")
    if cfg.get("tiny_prior"):
      # Quick mode checks the harness: a tiny flow keeps compiles short.
      self.base_config = TINY_28
      self.which = "tiny random RealNVP (quick mode: not a speed figure)"
      self._random_prior()
      return
    try:
      self.prior, self.params = mf.pretrained.load("fashion_mnist_realnvp")
      self.which = "shipped fashion_mnist_realnvp"
    except (ValueError, mf.checkpoint.CheckpointError):
      self.which = "random params, realnvp_fmnist_cpu"
      self._random_prior()

  def _random_prior(self):
    c = self.base_config
    self.prior = mf.flows.from_config(c)
    self.params = self.prior.init(jax.random.PRNGKey(1),
                                  jnp.full((2,) + c.image_shape, 0.5))

  def batch(self, n: int):
    reps = -(-n // len(self.images))
    return jnp.tile(self.images, (reps, 1, 1, 1))[:n]


def timed(fn: Callable[[], object], repeats: int) -> float:
  """Median wall seconds of ``fn()`` (its result blocked on)."""
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


class CompileClock:
  """Seconds JAX spends turning programs into executables while in use
  (``with CompileClock() as c: ...; c.seconds``): tracing, lowering and
  XLA's compile, or the load from the persistent cache in its place, as
  JAX itself reports them (``jax.monitoring``).  Unlike a first call's
  time less a warm call's, it cannot come out negative.  It counts every
  thread's compiles (the bench runs one thread)."""

  PREFIX = "/jax/core/compile/"

  def __enter__(self):
    self.seconds = 0.0
    jax.monitoring.register_event_duration_secs_listener(self._add)
    return self

  def _add(self, event, duration, **_):
    if event.startswith(self.PREFIX):
      self.seconds += float(duration)

  def __exit__(self, *exc):
    # Public from JAX 0.5-ish; before, only the private helper existed.
    drop = getattr(jax.monitoring, "unregister_event_duration_listener",
                   None)
    if drop is None:
      from jax._src import monitoring
      drop = monitoring._unregister_event_duration_listener_by_callback
    drop(self._add)


class Marginal(NamedTuple):
  """``marginal_step``'s figures: the first call, a warm call of ``steps``
  steps, the marginal s/step, ``steps``, and the first call's compile
  seconds (``CompileClock``)."""

  first: float
  run: float
  per: float
  steps: int
  compile: float


def marginal_step(call, s: int, repeats: int, min_extra_s: float = 0.5,
                  max_steps: int = 20000, cold: bool = True) -> Marginal:
  """Times ``call(steps)``: the step cost is ``(t(2S) - t(S)) / S``, so
  per-call work drops out.  Where the S extra steps take under
  ``min_extra_s`` or under the call's own overhead (sub-millisecond GPU
  steps behind a dispatch of a few hundred ms), S grows 4x at a time, up
  to ``max_steps``, so the difference is measured rather than noise.  With
  ``cold`` the first call starts from empty in-process caches, so its
  compile figure does not depend on which section ran before."""
  if cold:
    mf.solve.clear_caches()
  t = time.perf_counter()
  with CompileClock() as clock:
    jax.block_until_ready(call(s))
  first = time.perf_counter() - t
  while True:
    run = timed(lambda: call(s), repeats)
    run2 = timed(lambda: call(2 * s), repeats)
    extra = run2 - run
    if (extra >= min(min_extra_s, run - extra) and extra > 0) or \
        8 * s > max_steps:
      return Marginal(first, run, max(extra, 1e-9) / s, s, clock.seconds)
    s *= 4


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far (Linux: KiB units)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_peak_mb():
  stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2 ** 20


def denoise_problem(ctx, n, key=0, scale=0.4):
  shape = ctx.prior.config.image_shape
  noise = mf.noise.sinusoidal(shape, scale)
  x = ctx.batch(n)
  y = x + noise.sample(seed=jax.random.PRNGKey(key), sample_shape=(n,))
  return x, mf.operators.identity(), noise, y


def one_bit_problem(ctx, n, m=784, key=0, scale=1.0):
  shape = ctx.prior.config.image_shape
  k = jax.random.PRNGKey(key)
  op = mf.operators.one_bit(mf.operators.gaussian(k, m, shape), 0.5)
  noise = mf.noise.sinusoidal_1d(m, scale)
  x = ctx.batch(n)
  y = op(x) + noise.sample(seed=jax.random.fold_in(k, 1), sample_shape=(n,))
  return x, op, noise, y


def _recover_kw(ctx, op, noise, config=None, **kw):
  """``recover`` keywords; ``config`` takes ``SolverConfig`` fields."""
  out = dict(prior=ctx.prior, params=ctx.params, operator=op, noise=noise,
             optimizer=ctx.optimizer, **kw)
  if config:
    out["config"] = mf.SolverConfig(**config)
  return out


# ---------------------------------------------------------------------------


def throughput(ctx) -> dict:
  """Recovery steps/s by batch for denoising and 1-bit CS (m = 784), and
  the first call (compile + one step) of each shape.

  A step's cost is the marginal one, ``(t(2S) - t(S)) / S`` for calls of
  S and 2S steps, so the per-call work (the initial inverse, the final
  image, host transfers) is reported apart as ``call_overhead_s``: on an
  accelerator it can outweigh ten steps."""
  c = ctx.cfg
  rows = []
  s = c["steps"]
  for task, make in (("denoise", denoise_problem), ("one_bit", one_bit_problem)):
    for b in c["batches"]:
      _, op, noise, y = make(ctx, b)
      kw = _recover_kw(ctx, op, noise, beta=0.5)
      first, run, per, used, compile_s = marginal_step(
          lambda k: mf.recover(y, steps=k, **kw).x, s, c["repeats"])
      rows.append({"task": task, "batch": b, "s_per_step": per,
                   "steps_per_s": 1.0 / per,
                   "images_steps_per_s": b / per, "timed_steps": used,
                   "call_overhead_s": run - used * per,
                   "first_call_s": first, "compile_s": compile_s})
  # compile_s: JAX's own compile events (``CompileClock``); runs before
  # this field took the first call less a warm one.
  return {"prior": ctx.which, "steps": s, "rows": rows,
          "compile_measure": "jax.monitoring"}


def sweep(ctx) -> dict:
  """A β x m grid as one ``sweep`` call against the same recoveries as
  sequential ``recover`` calls (compile excluded from both)."""
  c = ctx.cfg
  betas = jnp.asarray(c["sweep_betas"])
  ms = jnp.asarray(c["sweep_ms"])
  _, op, noise, y = one_bit_problem(ctx, c["sweep_images"], int(max(ms)))
  kw = _recover_kw(ctx, op, noise)
  # The whole grid in one call (a max_batch no grid reaches).
  whole = mf.SolverConfig(max_batch=2 ** 62)
  mf.solve.clear_caches()
  with CompileClock() as clock:
    jax.block_until_ready(mf.sweep(y, betas=betas, ms=ms, steps=1,
                                   config=whole, **kw).x)
  compile_sweep = clock.seconds
  t_sweep = timed(lambda: mf.sweep(y, betas=betas, ms=ms, config=whole,
                                   steps=c["sweep_steps"], **kw).x, 1)
  # With the default max_batch (the backend's; 256 images on CPU): timed
  # below, alternating with the sequential calls.
  jax.block_until_ready(mf.sweep(y, betas=betas, ms=ms, steps=1, **kw).x)
  # The same grid in groups of at most max_batch images per call.
  mb = c.get("sweep_max_batch")
  t_grouped = None
  if mb:
    grouped = mf.SolverConfig(max_batch=mb)
    jax.block_until_ready(mf.sweep(y, betas=betas, ms=ms, steps=1,
                                   config=grouped, **kw).x)
    t_grouped = timed(lambda: mf.sweep(y, betas=betas, ms=ms, config=grouped,
                                       steps=c["sweep_steps"], **kw).x, 1)
  seq_kw = dict(kw)
  seq_kw.pop("operator")

  def one(b, m, steps):
    return mf.recover(y, operator=mf.operators.with_active(op, m), beta=b,
                      steps=steps, **seq_kw).x

  mf.solve.clear_caches()
  with CompileClock() as clock:
    jax.block_until_ready(one(betas[0], ms[0], 1))
  compile_seq = clock.seconds

  def all_seq():
    return [one(b, m, c["sweep_steps"]) for b in betas for m in ms]

  # The target compares these two: alternated, the fastest round of each
  # (single runs drifted with the machine's hour by more than the gap).
  rounds = _alternate(
      lambda: timed(lambda: mf.sweep(y, betas=betas, ms=ms,
                                     steps=c["sweep_steps"], **kw).x, 1),
      lambda: timed(all_seq, 1), c.get("sweep_rounds", 2))
  t_default = min(r[0] for r in rounds)
  t_seq = min(r[1] for r in rounds)
  return {"images": c["sweep_images"], "betas": len(betas), "ms": len(ms),
          "steps": c["sweep_steps"], "sweep_s": t_sweep,
          "sequential_s": t_seq, "speedup": _ratio(t_seq, t_sweep),
          "max_batch": mb, "grouped_s": t_grouped,
          "grouped_speedup": _ratio(t_seq, t_grouped),
          "default_max_batch": mf.solve.engine.default_max_batch(),
          "default_s": t_default,
          "default_speedup": _ratio(t_seq, t_default),
          "default_vs_sequential_rounds": [list(r) for r in rounds],
          "compile_sweep_s": compile_sweep,
          "compile_recover_s": compile_seq}


def restarts(ctx) -> dict:
  """R restarts vmapped in one call against R sequential calls."""
  c = ctx.cfg
  _, op, noise, y = denoise_problem(ctx, c["restart_batch"])
  kw = _recover_kw(ctx, op, noise, beta=0.5, steps=c["restart_steps"])
  rows = []
  for r in c["restarts"]:
    many = mf.SolverConfig(init="random", restarts=r)
    one = mf.SolverConfig(init="random")
    jax.block_until_ready(mf.recover(y, config=many, **kw).x)  # compile
    t_v = timed(lambda: mf.recover(y, config=many, **kw).x, c["repeats"])
    jax.block_until_ready(mf.recover(y, config=one, **kw).x)
    t_s = timed(lambda: [mf.recover(y, config=one,
                                    key=jax.random.PRNGKey(i), **kw).x
                         for i in range(r)], c["repeats"])
    rows.append({"restarts": r, "vmapped_s": t_v, "sequential_s": t_s,
                 "speedup": t_s / t_v})
  return {"batch": c["restart_batch"], "steps": c["restart_steps"],
          "rows": rows}


def _flops_of(compiled) -> float:
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0]
  return float(ca.get("flops", float("nan")))


def flops(ctx) -> dict:
  """Achieved FLOP/s of the recovery gradient (XLA's cost analysis over
  the measured time) as a fraction of a same-run f32 matmul; the gradient
  and the convolutions compiled as the solvers' step is
  (``mapflow.xla.step_options``)."""
  c = ctx.cfg
  b = c["flops_batch"]
  _, op, noise, y = one_bit_problem(ctx, b)
  z = jnp.zeros((b,) + tuple(ctx.prior.config.image_shape))
  loss = lambda z: jnp.sum(objectives.map_loss(
      z, y, prior=ctx.prior, params=ctx.params, operator=op, noise=noise,
      beta=0.5))
  g = jax.jit(jax.value_and_grad(loss),
              compiler_options=mf.xla.step_options()).lower(z).compile()
  f_step = _flops_of(g)
  g(z)
  t_step = timed(lambda: g(z), c["repeats"] + 2)
  n = c["matmul_n"]
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
  mm = jax.jit(lambda a, b: a @ b).lower(a, a).compile()
  mm(a, a)
  t_mm = timed(lambda: mm(a, a), c["repeats"] + 2)
  peak = 2.0 * n ** 3 / t_mm
  achieved = f_step / t_step
  return {"batch": b, "step_flops": f_step, "step_s": t_step,
          "achieved_gflops": achieved / 1e9, "matmul_n": n,
          "matmul_gflops": peak / 1e9, "fraction_of_matmul": achieved / peak,
          "conv_ceiling": conv_ceiling(ctx, b, peak)}


def coupling_sides(cfg):
  """Spatial sizes the coupling nets run at: RealNVP's scale s at
  H / 2^s; Glow's level l after its squeeze, at H / 2^(l+1)."""
  size = cfg.image_shape[0]
  if hasattr(cfg, "num_levels"):
    return [max(1, size // 2 ** (l + 1)) for l in range(cfg.num_levels)]
  return [max(1, size // 2 ** s) for s in range(getattr(cfg, "num_scales",
                                                        1))]


def conv_ceiling(ctx, batch, peak):
  """The backend's own 3x3 convolution at the prior's coupling-net shapes
  (hidden -> hidden at each scale's resolution), alone, as a fraction of
  the matmul: forward, and forward plus the input gradient (what a
  recovery step needs; the weights are constants there).  A recovery step
  is mostly these convolutions, so this bounds what it can reach."""
  cfg = ctx.prior.config
  h = getattr(cfg, "hidden_channels", 32)
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  rows = []
  for side in coupling_sides(cfg):
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, side, side, h))
    w = 0.1 * jax.random.normal(jax.random.PRNGKey(2), (3, 3, h, h))
    fl = 2.0 * batch * side * side * 9 * h * h
    jit = functools.partial(jax.jit, compiler_options=mf.xla.step_options())
    fwd = jit(conv)
    both = jit(jax.grad(lambda x, w: 0.5 * jnp.sum(conv(x, w) ** 2)))
    fwd(x, w).block_until_ready()
    both(x, w).block_until_ready()
    t_f = timed(lambda: fwd(x, w), ctx.cfg["repeats"] + 2)
    t_b = timed(lambda: both(x, w), ctx.cfg["repeats"] + 2)
    rows.append({"side": side, "channels": h,
                 "forward_fraction": fl / t_f / peak,
                 "with_input_grad_fraction": 2 * fl / t_b / peak})
  return rows


def glowip_lbfgs(linesearch: str | None = None):
  """L-BFGS set up like GlowIP's recovery: learning rate 0.1, memory 10.
  GlowIP called torch's L-BFGS with its defaults: a fixed step, no line
  search, and curvature pairs kept only when ``s·y > 0``; that is
  ``mapflow.optim.guarded_lbfgs`` (``linesearch=None``).  ``optax.lbfgs``
  with no line search keeps every pair and diverged in a trial (PSNR 4 dB).
  ``"zoom"`` is ``optax.lbfgs`` with its zoom line search (up to 20
  evaluations a step), whose ``while_loop`` XLA:CPU runs slowly."""
  if linesearch not in (None, "zoom"):
    raise ValueError(f"linesearch: got {linesearch!r}, expected None or 'zoom'")
  if linesearch == "zoom":
    return optax.lbfgs(learning_rate=0.1,
                       linesearch=optax.scale_by_zoom_linesearch(
                           max_linesearch_steps=20))
  return mf.optim.guarded_lbfgs(learning_rate=0.1, memory_size=10)


# Asim's γ = 5 won on the validation images of both settings (SINUSOIDAL
# s = 0.4; 1-bit CS m = 800, s = 1) in results/*/selection.csv.
TTQ_TASKS = {"denoise": ("SINUSOIDAL denoising, s=0.4", denoise_problem, 5.0),
             "one_bit": ("1-bit CS, m=784, s=1", one_bit_problem, 5.0)}


def time_to_quality(ctx) -> dict:
  """Wall time until a mean PSNR: our default solver (Adam, lr 0.03)
  against a GlowIP-style L-BFGS (``glowip_lbfgs``; 30 outer steps of 20
  iterations = 600 in full mode), on the same MAP objective (β = 0.5),
  prior, images and machine.  Each point is a fresh run of that many
  steps, timed after compilation, saved (``ctx.save_partial``) as soon as
  it is measured.

  L-BFGS's PSNR need not rise with its iterations (the MAP objective is
  unbounded below where the flow's density spikes), so its target is the
  best PSNR among its points, at that point's wall time: an oracle early
  stop in L-BFGS's favour.  Its final PSNR is reported too.  A third
  curve is GlowIP's method whole: the same L-BFGS on Asim et al.'s proxy
  loss (bounded below), with Adam's time to its best PSNR.  Once a
  solver's points have taken ``ttq_budget_s`` in all, its later (longer)
  points are skipped.  ``speedup`` is the smallest over the tasks."""
  c = ctx.cfg
  lbfgs = glowip_lbfgs(c.get("lbfgs_linesearch"))
  budget = c.get("ttq_budget_s")
  res = {"images": c["ttq_images"], "budget_s": budget, "beta": 0.5,
         "lbfgs_linesearch": c.get("lbfgs_linesearch"), "tasks": {}}

  def curve(y, x, op, noise, opt, schedule, pts, gamma=None):
    kw = dict(prior=ctx.prior, params=ctx.params, operator=op, optimizer=opt)
    if gamma is None:
      solve = functools.partial(mf.recover, noise=noise, beta=0.5, **kw)
    else:
      solve = functools.partial(mf.recover_asim, gamma=gamma, **kw)
    jax.block_until_ready(solve(y, steps=1).x)
    spent = 0.0
    for k in schedule:
      if budget is not None and spent > budget:
        break  # later points would take longer still
      t = time.perf_counter()
      xh = jax.block_until_ready(solve(y, steps=k).x)
      wall = time.perf_counter() - t
      spent += wall
      pts.append({"steps": k, "wall_s": wall,
                  "psnr": float(jnp.mean(mf.metrics.psnr(x, xh)))})
      ctx.save_partial(res)

  for name in c.get("ttq_tasks", tuple(TTQ_TASKS)):
    label, problem, gamma = TTQ_TASKS[name]
    x, op, noise, y = problem(ctx, c["ttq_images"])
    r = res["tasks"][name] = {"task": label, "asim_gamma": gamma, "adam": [],
                              "lbfgs": [], "lbfgs_asim": []}
    curve(y, x, op, noise, ctx.optimizer, c["ttq_schedule"], r["adam"])
    curve(y, x, op, noise, lbfgs, c["lbfgs_schedule"], r["lbfgs"])
    curve(y, x, op, noise, lbfgs, c["lbfgs_schedule"], r["lbfgs_asim"],
          gamma=gamma)
    best = max(r["lbfgs"], key=lambda p: p["psnr"])
    t_adam = _time_to(r["adam"], best["psnr"])
    r.update(lbfgs_steps_reached=r["lbfgs"][-1]["steps"],
             lbfgs_final_psnr=r["lbfgs"][-1]["psnr"],
             target_psnr=best["psnr"], lbfgs_best_steps=best["steps"],
             lbfgs_wall_s=best["wall_s"], adam_wall_s_to_target=t_adam,
             adam_first_point_above=r["adam"][0]["psnr"] >= best["psnr"],
             speedup=_ratio(best["wall_s"], t_adam))
    g = max(r["lbfgs_asim"], key=lambda p: p["psnr"])
    t_g = _time_to(r["adam"], g["psnr"])
    r.update(glowip_best_psnr=g["psnr"], glowip_best_steps=g["steps"],
             glowip_wall_s=g["wall_s"], adam_wall_s_to_glowip=t_g,
             speedup_vs_glowip=_ratio(g["wall_s"], t_g))
  ups = [r["speedup"] for r in res["tasks"].values()]
  res["speedup"] = None if None in ups or not ups else min(ups)
  return res


def _ratio(a, b):
  return a / b if b and math.isfinite(b) else None


def _time_to(points, target):
  """Earliest wall time at which the curve reaches ``target`` (linear
  interpolation between measured points; NaN if never)."""
  prev = None
  for p in points:
    if p["psnr"] >= target:
      if prev is None:
        return p["wall_s"]
      f = (target - prev["psnr"]) / max(p["psnr"] - prev["psnr"], 1e-12)
      return prev["wall_s"] + f * (p["wall_s"] - prev["wall_s"])
    prev = p
  return float("nan")


def training(ctx) -> dict:
  """Training throughput of the CPU preset (quick: the tiny flow) and train bits/dim against
  wall-clock over the first steps from a fresh init."""
  from mapflow import training as tr
  c = ctx.cfg
  cfg = ctx.base_config
  flow = mf.flows.from_config(cfg)
  tc = tr.TrainConfig(batch_size=c["train_batch"])
  opt = tr.make_optimizer(tc)
  x = (np.asarray(ctx.batch(c["train_batch"])) * 255).astype(np.uint8)
  state = tr.init_state(flow, tc, x, opt)
  step = tr.make_train_step(flow, tc, opt)
  t0 = time.perf_counter()
  state, m = step(state, jnp.asarray(x))
  jax.block_until_ready(m["bpd"])
  first = time.perf_counter() - t0
  pts, times = [], []
  t_start = time.perf_counter()
  for i in range(c["train_steps"]):
    t = time.perf_counter()
    state, m = step(state, jnp.asarray(x))
    bpd = float(m["bpd"])
    times.append(time.perf_counter() - t)
    pts.append({"step": i + 2, "wall_s": time.perf_counter() - t_start,
                "train_bpd": bpd})
  s = statistics.median(times)
  return {"batch": c["train_batch"], "s_per_step": s,
          "images_per_s": c["train_batch"] / s, "first_call_s": first,
          "curve": pts,
          "note": "train bits/dim on a fixed batch of shipped images"}


def scaling(ctx) -> dict:
  """Compile and step time of MAP denoising against image size and depth
  (CPU preset architecture, random params, batch ``scaling_batch``)."""
  c = ctx.cfg
  base = ctx.base_config
  rows = []
  variants = [(s, base.couplings_per_scale) for s in c["scaling_sizes"]]
  variants += [(c["scaling_sizes"][0], d) for d in c["scaling_depths"]
               if d != base.couplings_per_scale]
  for size, depth in variants:
    cfg = dataclasses.replace(base, image_shape=(size, size, 1),
                              couplings_per_scale=depth)
    prior = mf.flows.from_config(cfg)
    params = prior.init(jax.random.PRNGKey(0),
                        jnp.full((2, size, size, 1), 0.5))
    noise = mf.noise.sinusoidal((size, size, 1), 0.4)
    y = jnp.full((c["scaling_batch"], size, size, 1), 0.5)
    kw = dict(prior=prior, params=params, operator=mf.operators.identity(),
              noise=noise, beta=0.5, optimizer=ctx.optimizer)
    t = time.perf_counter()
    jax.block_until_ready(mf.recover(y, steps=1, **kw).x)
    first = time.perf_counter() - t
    # The marginal step, so a GPU's per-call dispatch does not count.
    _, _, per, used, _ = marginal_step(
        lambda k: mf.recover(y, steps=k, **kw).x, c["steps"], 1)
    rows.append({"size": size, "couplings_per_scale": depth,
                 "params": sum(int(a.size)
                               for a in jax.tree_util.tree_leaves(params)),
                 "first_call_s": first, "s_per_step": per,
                 "timed_steps": used, "peak_rss_mb_so_far": peak_rss_mb()})
  return {"batch": c["scaling_batch"], "rows": rows}


def chunking(ctx) -> dict:
  """Steps per dispatch: ``chunk`` = 1 (a Python loop of compiled steps)
  against ``chunk`` = 10 (``lax.scan`` inside one compiled call), marginal
  s/step at small batches, where per-dispatch overhead matters most.  The
  default is 1 on CPU and 50 elsewhere."""
  c = ctx.cfg
  s = c["chunk_steps"]
  rows = []
  for b in c["chunk_batches"]:
    _, op, noise, y = one_bit_problem(ctx, b)
    for chunk in (1, 10):
      kw = _recover_kw(ctx, op, noise, beta=0.5, config={"chunk": chunk})
      m = marginal_step(lambda k: mf.recover(y, steps=k, **kw).x, s,
                        c["repeats"])
      rows.append({"batch": b, "chunk": chunk, "s_per_step": m.per,
                   "compile_s": m.compile})
  return {"task": "1-bit CS, m=784", "steps": s, "rows": rows}


def precision(ctx) -> dict:
  """Mixed precision: the flow's layers in bfloat16
  (``mf.flows.with_compute_dtype``; latents, optimiser and noise term stay
  float32) against float32, on MAP denoising (SINUSOIDAL, s = 0.4) from the
  same start: mean PSNR after the same steps, and marginal s/step."""
  c = ctx.cfg
  x, op, noise, y = denoise_problem(ctx, c["precision_images"])
  rows = []
  for name, prior in (("float32", ctx.prior),
                      ("bfloat16", mf.flows.with_compute_dtype(
                          ctx.prior, jnp.bfloat16))):
    kw = _recover_kw(ctx, op, noise, beta=0.5,
                     config={"init": "measurements",
                             "init_range": (0.0, 1.0)})
    kw["prior"] = prior
    t = time.perf_counter()
    jax.block_until_ready(mf.recover(y, steps=1, **kw).x)
    first = time.perf_counter() - t
    res = mf.recover(y, steps=c["precision_steps"], **kw)
    per = marginal_step(lambda k: mf.recover(y, steps=k, **kw).x,
                        c["steps"], c["repeats"]).per
    rows.append({"dtype": name, "psnr": float(jnp.mean(mf.metrics.psnr(
        x, res.x))), "s_per_step": per, "first_call_s": first,
                 "non_finite_steps": int(jnp.sum(res.skipped))})
  return {"task": "SINUSOIDAL denoising, s = 0.4, beta 0.5",
          "images": c["precision_images"], "steps": c["precision_steps"],
          "rows": rows, "psnr_change_db": rows[1]["psnr"] - rows[0]["psnr"],
          "speedup": _ratio(rows[0]["s_per_step"], rows[1]["s_per_step"])}


def remat(ctx) -> dict:
  """Rematerialising the scanned couplings in the backward pass against
  keeping their activations, for the CPU preset's architecture: XLA's
  compiled temporary memory and the time of one gradient, for recovery
  (d loss / d z) and for training (d NLL / d params).  Random params; the
  scanned variants share theirs, and their gradients are compared."""
  c = ctx.cfg
  b = c["remat_batch"]
  x, op, noise, y = denoise_problem(ctx, b)
  rows, grads = [], {}
  for scan, rm in ((False, False), (True, False), (True, True)):
    cfg = dataclasses.replace(ctx.base_config, scan_layers=scan, remat=rm)
    prior = mf.flows.from_config(cfg)
    params = prior.init(jax.random.PRNGKey(1), x[:2])
    z = jnp.zeros_like(x)

    def map_loss(z, params, prior=prior):
      return jnp.sum(objectives.map_loss(z, y, prior=prior, params=params,
                                         operator=op, noise=noise, beta=0.5))

    def nll(params, z, prior=prior):
      return -jnp.mean(prior.log_prob(params, x))

    for what, fn, args in (("recovery", jax.grad(map_loss), (z, params)),
                           ("training", jax.grad(nll), (params, z))):
      if what not in c["remat_gradients"]:
        continue
      t = time.perf_counter()
      compiled = jax.jit(fn).lower(*args).compile()
      compile_s = time.perf_counter() - t
      mem = compiled.memory_analysis()
      temp = None if mem is None else mem.temp_size_in_bytes / 2 ** 20
      g = compiled(*args)
      if scan:
        grads[(what, rm)] = g
      rows.append({"gradient": what, "scan": scan, "remat": rm,
                   "temp_mb": temp, "compile_s": compile_s,
                   "s_per_grad": timed(lambda: compiled(*args),
                                       c["repeats"])})
  diff = {w: max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree_util.tree_leaves(grads[(w, False)]),
      jax.tree_util.tree_leaves(grads[(w, True)])))
          for w in c["remat_gradients"]}
  return {"batch": b, "rows": rows, "remat_grad_max_abs_diff": diff}


def memory(ctx) -> dict:
  """Peak memory of the whole run so far (host RSS; device peak where the
  backend reports one)."""
  return {"peak_rss_mb": peak_rss_mb(), "device_peak_mb": device_peak_mb()}


def models(ctx) -> dict:
  """Each shipped flow: its parameters, test bits/dim, and CPU recovery
  speed (marginal s/step of MAP SINUSOIDAL denoising at batch
  ``models_batch``, s = 0.4, Adam)."""
  c = ctx.cfg
  rows = []
  for name in mf.pretrained.available():
    prior, params = mf.pretrained.load(name)
    if not hasattr(prior, "config") or not hasattr(prior, "forward"):
      continue  # the VAE: not a flow prior
    info = mf.pretrained.info(name)
    shape = tuple(prior.config.image_shape)
    noise = mf.noise.sinusoidal(shape, 0.4)
    b = c.get("models_batch", 64)
    y = jnp.full((b,) + shape, 0.5) + noise.sample(
        seed=jax.random.PRNGKey(0), sample_shape=(b,))
    kw = dict(prior=prior, params=params, operator=mf.operators.identity(),
              noise=noise, beta=0.5, optimizer=ctx.optimizer)
    first, _, per, _, _ = marginal_step(
        lambda k: mf.recover(y, steps=k, **kw).x, c["steps"], c["repeats"])
    rows.append({"model": name, "config": type(prior.config).__name__,
                 "params": sum(int(a.size) for a in
                               jax.tree_util.tree_leaves(params)),
                 "test_bpd": info.get("eval", {}).get("test_bpd"),
                 "step": info.get("step"), "batch": b, "s_per_step": per,
                 "image_steps_per_s": b / per, "first_call_s": first})
    ctx.save_partial({"rows": rows})
  return {"rows": rows}


def _alternate(ours, theirs, rounds):
  """Per-round s/step of ``ours()`` and ``theirs()``, run one after the
  other, ``rounds`` times (each returns its own s/step)."""
  out = []
  for _ in range(rounds):
    out.append((ours(), theirs()))
  return out


def _torch_per_step(step, steps):
  step()
  step.sync()  # warm: the first call allocates
  t = time.perf_counter()
  for _ in range(steps):
    step()
  step.sync()
  return (time.perf_counter() - t) / steps


def peer(ctx) -> dict:
  """Ours against a PyTorch implementation of the same flows
  (``bench.peer_torch``, the ``[peer]`` extra), in this one process,
  alternating: one MAP step of SINUSOIDAL denoising with the 28x28
  RealNVP (ours: ``recover``'s marginal step; PyTorch: Adam on z), one MAP
  step of Gaussian CS (m = 2,000, Asim et al.'s loss) with the Glow
  L = 4, K = 8, 512 wide at 64x64x3, and one training step of the RealNVP
  preset.  Ratios are PyTorch's s/step over ours (> 1: ours faster), the
  median of the rounds'."""
  if jax.default_backend() != "cpu":
    # The reference runs on CPU threads; a GPU comparison would need both
    # sides on the device and per-step (not chunked) dispatch.
    return {"skipped": f"CPU only (JAX backend: {jax.default_backend()})"}
  try:
    import torch
    from bench import peer_torch as pt
  except ImportError:
    return {"skipped": "torch is not installed (pip install "
                       "'mapflow[peer]')"}
  from mapflow import training as tr
  c = ctx.cfg
  quick = bool(c.get("tiny_prior"))
  rounds, s = c.get("peer_rounds", 4), c.get("peer_steps", 3)
  glow_cfg = (mf.flows.GlowConfig(image_shape=(8, 8, 3), num_levels=2,
                                  steps_per_level=1, hidden_channels=8)
              if quick else pt.glow_cs_config())
  m = 50 if quick else 2000
  rows = []
  for kind, cfg, batch in (
      ("realnvp_sinusoidal", ctx.base_config, c.get("peer_realnvp_batch", 64)),
      ("glow_cs", glow_cfg, c.get("peer_glow_batch", 6))):
    if kind == "realnvp_sinusoidal":
      prior, params = ctx.prior, ctx.params
      noise = mf.noise.sinusoidal(cfg.image_shape, 0.4)
      op = mf.operators.identity()
      x = jnp.full((batch,) + cfg.image_shape, 0.5)
      y = x + noise.sample(seed=jax.random.PRNGKey(0), sample_shape=(batch,))
      run = lambda k: mf.recover(y, prior=prior, params=params, operator=op,
                                 noise=noise, beta=0.5, steps=k,
                                 optimizer=ctx.optimizer).x
      theirs, n_torch = pt.map_step_fns(kind, cfg, batch, params=params,
                                        device="cpu")
    else:
      prior = mf.flows.from_config(cfg)
      x = jax.random.uniform(jax.random.PRNGKey(0), (batch,) + cfg.image_shape,
                             minval=0.05, maxval=0.95)
      params = prior.init(jax.random.PRNGKey(1), x)
      op = mf.operators.gaussian(jax.random.PRNGKey(2), m, cfg.image_shape)
      y = op(x)
      run = lambda k: mf.recover_asim(y, prior=prior, params=params,
                                      operator=op, gamma=0.1, steps=k,
                                      optimizer=ctx.optimizer).x
      theirs, n_torch = pt.map_step_fns(kind, cfg, batch, m=m, device="cpu")
    t = time.perf_counter()
    jax.block_until_ready(run(s))
    first = time.perf_counter() - t

    def ours():  # grows the step count until the extra steps are measured
      return marginal_step(run, s, 1, cold=False).per
    pairs = _alternate(ours, lambda: _torch_per_step(theirs, s), rounds)
    n_ours = sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
    rows.append(_peer_row(kind, "map step", batch, n_ours, n_torch, pairs,
                          first))
    ctx.save_partial({"rows": rows})
  # Training: the RealNVP preset, a fixed batch, both dequantising afresh.
  tb = c.get("peer_train_batch", 64)
  flow = mf.flows.from_config(ctx.base_config)
  tc = tr.TrainConfig(batch_size=tb)
  opt = tr.make_optimizer(tc)
  xb = (np.asarray(ctx.batch(tb)) * 255).astype(np.uint8)
  state = {"s": tr.init_state(flow, tc, xb, opt)}
  step = tr.make_train_step(flow, tc, opt)
  xj = jnp.asarray(xb)

  def ours_train():
    state["s"], mt = step(state["s"], xj)
    jax.block_until_ready(mt["bpd"])
    t = time.perf_counter()
    for _ in range(s):
      state["s"], mt = step(state["s"], xj)
    jax.block_until_ready(mt["bpd"])
    return (time.perf_counter() - t) / s
  t = time.perf_counter()
  ours_train()
  first = time.perf_counter() - t
  theirs, n_torch = pt.train_step_fn(ctx.base_config, xb, device="cpu")
  pairs = _alternate(ours_train, lambda: _torch_per_step(theirs, s), rounds)
  n_ours = sum(int(a.size) for a in jax.tree_util.tree_leaves(
      state["s"].params))
  rows.append(_peer_row("realnvp_train", "training step", tb, n_ours,
                        n_torch, pairs, first))
  return {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
          "rounds": rounds, "steps_per_round": s, "rows": rows}


def _peer_row(kind, what, batch, n_ours, n_torch, pairs, first):
  ours, theirs = [p[0] for p in pairs], [p[1] for p in pairs]
  ratios = [b / a for a, b in pairs]
  return {"problem": kind, "what": what, "batch": batch,
          "params_ours": n_ours, "params_torch": n_torch,
          "ours_s_per_step": statistics.median(ours),
          "torch_s_per_step": statistics.median(theirs),
          "ratio": statistics.median(ratios),
          "ratio_range": [min(ratios), max(ratios)],
          "ours_first_call_s": first, "pairs": pairs}
  # (training: ours_first_call_s is the compile plus S + 1 steps)


_DEMO_CLOCK = re.compile(r"; (\d+) s\s*$", re.M)


def first_minute(ctx) -> dict:
  """A new user's first minute: the README's main job (``python -m
  recover.demo``) in a fresh process, first from an empty compile cache,
  then again on the cache that run left.  Wall seconds include Python's
  start and the imports; ``demo_clock_s`` is the demo's own printed clock
  (from after its imports).  The demo's table is checked to be the same in
  every run."""
  if jax.default_backend() != "cpu":
    # The child would share this process's accelerator (and its
    # preallocated memory); the target is set for the CPU.
    return {"skipped": f"measured on the CPU only (backend "
                       f"{jax.default_backend()})"}
  rounds = ctx.cfg.get("first_minute_rounds", 2)
  root = Path(__file__).resolve().parents[1]
  rows, tables = [], set()
  for i in range(rounds):
    with tempfile.TemporaryDirectory() as d:
      for cache in ("empty", "warm"):
        cmd = [sys.executable, "-m", "recover.demo", "--out", f"{d}/out",
               "--cache", f"{d}/cache"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
          raise RuntimeError(f"first_minute: {' '.join(cmd)} exited "
                             f"{proc.returncode}: {proc.stderr[-2000:]}")
        clock = _DEMO_CLOCK.search(proc.stdout)
        if clock is None:
          raise RuntimeError("first_minute: the demo printed no clock (its "
                             "last line ends '; N s'): "
                             f"{proc.stdout[-500:]!r}")
        tables.add((Path(d) / "out" / "psnr.csv").read_text())
        rows.append({"round": i, "cache": cache, "wall_s": wall,
                     "demo_clock_s": float(clock.group(1))})
        ctx.save_partial({"rows": rows})
        if len(tables) != 1:
          raise RuntimeError("first_minute: the demo's table differed "
                             "between runs (the timings so far are saved)")

  def med(cache):
    return statistics.median(r["wall_s"] for r in rows
                             if r["cache"] == cache)

  return {"rows": rows, "empty_cache_s": med("empty"),
          "warm_cache_s": med("warm"), "rounds": rounds,
          "command": "python -m recover.demo --cache <empty folder>"}


# XLA op names by what they do (the names XLA:CPU gives its thunks; GPU
# kernels are named by their HLO too).
_OP_KINDS = (
    ("convolution / matmul", re.compile(
        r"^(ynn_fusion|xnn_fusion|onednn|convolution|dot|cudnn|.*gemm|"
        r".*conv)", re.I)),
    ("transpose / copy", re.compile(r"transpose|^copy", re.I)),
    ("LAPACK / custom call", re.compile(
        r"triangular_solve|cholesky|lapack|custom-call|custom_call", re.I)),
)
# Runtime bookkeeping, not ops: executors, waits, Python frames.
_NOT_OPS = re.compile(r"^\$|Thunk|Execut|Await|Pjit|PjRt|shard_args|"
                      r"[Cc]opy[A-Z]|Batched|backend_compile|end: |^Compile",
                      re.I)


def op_kind(name: str) -> Optional[str]:
  """What an XLA op of this name does (``_OP_KINDS``), "elementwise and
  other" for any other op, None for runtime events that are not ops."""
  if _NOT_OPS.search(name):
    return None
  for kind, pattern in _OP_KINDS:
    if pattern.search(name):
      return kind
  return "elementwise and other"


def _profile_calls(call, reps: int) -> dict:
  """Thread time by ``op_kind`` over ``reps`` calls of ``call()`` (already
  compiled), from ``jax.profiler``'s trace; per call, in ms."""
  import glob
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      for _ in range(reps):
        jax.block_until_ready(call())
    files = glob.glob(f"{d}/**/*.xplane.pb", recursive=True)
    if not files:
      return {}
    data = jax.profiler.ProfileData.from_file(files[0])
  ms, count = {}, {}
  for plane in data.planes:
    for line in plane.lines:
      for ev in line.events:
        kind = op_kind(ev.name)
        if kind is not None:
          ms[kind] = ms.get(kind, 0.0) + ev.duration_ns / 1e6 / reps
          count[kind] = count.get(kind, 0) + 1
  return {k: {"ms": ms[k], "ops": count[k] / reps} for k in ms}


def op_profile(ctx) -> dict:
  """Where a step's time goes: XLA ops' thread time (summed over the
  threads that ran them), by kind (``op_kind``), for the RealNVP MAP step
  (SINUSOIDAL denoising, one-step ``recover`` calls: two runs of the step
  and the call's small programs), its training step, and in full mode the
  64x64 Glow's CS step (Asim et al.'s loss).  Shares
  are of the ops' total; thread time may exceed wall time where ops ran
  side by side.  Found the Glow step's second forward pass (BENCHMARKS.md,
  fast paths)."""
  from mapflow import training as tr
  c = ctx.cfg
  b = c.get("profile_batch", 64)
  reps = c.get("profile_steps", 3)
  rows = []

  def add(problem, call, batch=b):
    jax.block_until_ready(call())          # compiled outside the trace
    kinds = _profile_calls(call, reps)
    total = sum(v["ms"] for v in kinds.values())
    rows.append({"problem": problem, "batch": batch,
                 "op_ms_per_call": total,
                 "kinds": {k: dict(v, share=v["ms"] / total if total else
                                   float("nan"))
                           for k, v in sorted(kinds.items())}})
    ctx.save_partial({"rows": rows})

  _, op, noise, y = denoise_problem(ctx, b)
  # A one-step recover call runs the step twice (the step, then the spare
  # one that scores and decodes the result) and its small init/finish.
  add("realnvp MAP: recover call of 1 step", lambda: mf.recover(
      y, **_recover_kw(ctx, op, noise, beta=0.5), steps=1).x)
  flow = mf.flows.from_config(ctx.base_config)
  tc = tr.TrainConfig(batch_size=b)
  opt = tr.make_optimizer(tc)
  xb = jnp.asarray((np.asarray(ctx.batch(b)) * 255).astype(np.uint8))
  state = {"s": tr.init_state(flow, tc, np.asarray(xb), opt)}
  step = tr.make_train_step(flow, tc, opt)

  def train_once():
    state["s"], m = step(state["s"], xb)
    return m["bpd"]
  add("realnvp training step", train_once)
  if not c.get("tiny_prior"):
    cfg = mf.flows.GlowConfig(image_shape=(64, 64, 3), num_levels=4,
                              steps_per_level=8, hidden_channels=512,
                              coupling="affine", num_bits=5)
    prior = mf.flows.from_config(cfg)
    x = jax.random.uniform(jax.random.PRNGKey(0), (6,) + cfg.image_shape,
                           minval=0.05, maxval=0.95)
    params = prior.init(jax.random.PRNGKey(1), x)
    gop = mf.operators.gaussian(jax.random.PRNGKey(2), 2000, cfg.image_shape)
    gy = gop(x)
    add("glow 64x64x3 CS: recover_asim call of 1 step",
        lambda: mf.recover_asim(gy, prior=prior, params=params, operator=gop,
                                gamma=0.1, steps=1,
                                optimizer=ctx.optimizer).x, batch=6)
  return {"steps_per_profile": reps, "rows": rows}


ALL: Dict[str, Callable] = {
    "throughput": throughput, "sweep": sweep, "restarts": restarts,
    "flops": flops, "time_to_quality": time_to_quality,
    "training": training, "scaling": scaling, "chunking": chunking,
    "precision": precision, "remat": remat, "memory": memory,
    "models": models, "peer": peer, "first_minute": first_minute,
    "op_profile": op_profile,
}


# ---------------------------------------------------------------------------


def _f(v, nd=2):
  if v is None:
    return "—"
  if isinstance(v, float):
    if not math.isfinite(v):
      return "n/a"
    if v != 0 and abs(v) < 10 ** -nd:
      return f"{v:.2g}"
    return f"{v:.{nd}f}" if abs(v) < 1e5 else f"{v:.3g}"
  return str(v)


def _table(rows, cols):
  out = ["| " + " | ".join(c for c, _ in cols) + " |",
         "|" + "---|" * len(cols)]
  for r in rows:
    out.append("| " + " | ".join(_f(r.get(k)) for _, k in cols) + " |")
  return out


def markdown(report: dict) -> str:
  s = report["sections"]
  lines = ["# Benchmarks", "",
           f"Mode **{report['mode']}**, backend `{report['backend']}` "
           f"({report['device']}, {report['devices']} device(s)), jax "
           f"{report['jax']}, started {report['started']}.  Regenerate "
           "with `python -m bench` (`--quick` for the smoke version).  "
           "Times are medians; ratios are measured within this one run."
           + (f"  mapflow's steps compiled with `{report['step_xla_options']}` "
              "(`mapflow.xla`)." if report.get("step_xla_options") else ""),
           ""]
  if "peer" in s:
    pe = s["peer"]
    lines += ["## Against PyTorch", ""]
    if "skipped" in pe:
      lines += [f"Skipped: {pe['skipped']}.", ""]
    else:
      when = (f" (this section from a later run, {pe['measured']})"
              if "measured" in pe else "")
      lines += [f"The same flows in PyTorch {pe['torch']} "
                f"({pe['torch_threads']} threads; `bench/peer_torch.py`), "
                f"timed in this process{when} alternately with ours, "
                f"{pe['rounds']} rounds of {pe['steps_per_round']} steps. "
                "Ratio: PyTorch's s/step over ours (> 1: ours faster), "
                "the median of the rounds' and their range.", ""]
      rows = [dict(r, range="–".join(f"{v:.2f}" for v in r["ratio_range"]))
              for r in pe["rows"]]
      lines += _table(rows, [
          ("problem", "problem"), ("step", "what"), ("batch", "batch"),
          ("params (ours)", "params_ours"), ("params (torch)", "params_torch"),
          ("ours s/step", "ours_s_per_step"),
          ("PyTorch s/step", "torch_s_per_step"), ("ratio", "ratio"),
          ("range", "range")])
      lines.append("")
  if "first_minute" in s and "skipped" in s["first_minute"]:
    lines += ["## The first minute", "",
              f"Skipped: {s['first_minute']['skipped']}.", ""]
  elif "first_minute" in s:
    fm = s["first_minute"]
    lines += ["## The first minute", "",
              f"`{fm['command']}` in a fresh process (wall seconds, imports "
              "included), then again on the cache it left; "
              f"{fm['rounds']} rounds, each in a new empty folder.  Median: "
              f"**{_f(fm['empty_cache_s'])} s** from an empty cache, "
              f"{_f(fm['warm_cache_s'])} s warm.", ""]
    lines += _table(fm["rows"], [
        ("round", "round"), ("cache", "cache"), ("wall (s)", "wall_s"),
        ("demo's own clock (s)", "demo_clock_s")]) + [""]
  if "op_profile" in s:
    op = s["op_profile"]
    when = (f" This section is from a later run ({op['measured']})."
            if "measured" in op else "")
    lines += ["## Where a step's time goes", "",
              "XLA ops' thread time per call (`jax.profiler`), by kind, "
              f"over {op['steps_per_profile']} calls; shares of the ops' "
              "total. An op's time is how long it ran on the thread that "
              "ran it: XLA's own convolutions, which mapflow's steps use "
              "on CPU (`mapflow.xla`), spread each over a pool of threads, "
              "whose work is counted once, as the op's duration."
              f"{when}", ""]
    kinds = [k for k, _ in _OP_KINDS] + ["elementwise and other"]
    rows = [dict({"problem": r["problem"], "batch": r["batch"],
                  "ms": r["op_ms_per_call"]},
                 **{k: (f"{100 * r['kinds'][k]['share']:.0f}% "
                        f"({r['kinds'][k]['ops']:.0f} ops)"
                        if k in r["kinds"] else "—") for k in kinds})
            for r in op["rows"]]
    lines += _table(rows, [("problem", "problem"), ("batch", "batch"),
                           ("op ms/call", "ms")] +
                    [(k, k) for k in kinds]) + [""]
  if "throughput" in s:
    lines += ["## Recovery throughput", "",
              f"Prior: {s['throughput']['prior']}.", ""]
    lines += _table(s["throughput"]["rows"], [
        ("task", "task"), ("batch", "batch"), ("s/step", "s_per_step"),
        ("steps/s", "steps_per_s"), ("image-steps/s", "images_steps_per_s"),
        ("per-call overhead (s)", "call_overhead_s"),
        ("compile (s)", "compile_s")]) + [""]
  if "models" in s:
    lines += ["## Shipped flows: recovery speed", "",
              "Marginal seconds per MAP step (SINUSOIDAL denoising, "
              "s = 0.4, Adam) at the batch given.", ""]
    lines += _table(s["models"]["rows"], [
        ("model", "model"), ("params", "params"), ("test bits/dim",
                                                   "test_bpd"),
        ("batch", "batch"), ("s/step", "s_per_step"),
        ("image-steps/s", "image_steps_per_s")]) + [""]
  if "sweep" in s:
    w = s["sweep"]
    lines += ["## β x m sweep: one call against sequential calls", "",
              f"{w['betas']} β x {w['ms']} m, {w['images']} images, "
              f"{w['steps']} steps: one `sweep` {_f(w['sweep_s'])} s, "
              f"sequential `recover` calls {_f(w['sequential_s'])} s: "
              f"**{_f(w['speedup'])}x**"
              + (f"; in groups of at most {w['max_batch']} images a call "
                 f"(`max_batch`) {_f(w['grouped_s'])} s: "
                 f"**{_f(w['grouped_speedup'])}x**"
                 if w.get("grouped_s") else "")
              + (f"; with the default max_batch ({w['default_max_batch']}) "
                 f"**{_f(w['default_speedup'])}x**, the fastest of "
                 f"{len(w['default_vs_sequential_rounds'])} rounds "
                 "alternating with the sequential calls"
                 if w.get("default_vs_sequential_rounds") else "")
              + ". Compile: sweep "
              f"{_f(w['compile_sweep_s'])} s, recover "
              f"{_f(w['compile_recover_s'])} s.", ""]
  if "restarts" in s:
    lines += ["## Restarts: vmapped against sequential", ""]
    lines += _table(s["restarts"]["rows"], [
        ("R", "restarts"), ("vmapped (s)", "vmapped_s"),
        ("sequential (s)", "sequential_s"), ("speedup", "speedup")]) + [""]
  if "flops" in s:
    f = s["flops"]
    lines += ["## Achieved FLOP/s", "",
              f"Recovery gradient at batch {f['batch']}: "
              f"{_f(f['achieved_gflops'])} GFLOP/s against a {f['matmul_n']}"
              f"² f32 matmul at {_f(f['matmul_gflops'])} GFLOP/s: "
              f"**{_f(100 * f['fraction_of_matmul'], 1)}%**.", ""]
    if f.get("conv_ceiling"):
      lines += ["The backend's own 3x3 convolution at the prior's shapes, "
                "alone, same batch, as a share of the same matmul (a "
                "recovery step is mostly these; the input gradient is a "
                "second convolution of the same size):", ""]
      lines += _table([dict(r, shape=f"{r['side']}²x{r['channels']} -> "
                            f"{r['channels']}",
                            fwd=100 * r["forward_fraction"],
                            both=100 * r["with_input_grad_fraction"])
                       for r in f["conv_ceiling"]],
                      [("convolution", "shape"), ("forward (%)", "fwd"),
                       ("forward + input gradient (%)", "both")]) + [""]
  if "time_to_quality" in s:
    q = s["time_to_quality"]
    ls = q.get("lbfgs_linesearch") or "no line search, as torch's default"
    lines += ["## Time to quality", "",
              f"{q['images']} images, the MAP objective at β = "
              f"{q.get('beta', '?')}; L-BFGS GlowIP-style ({ls}).  L-BFGS's "
              "target is its best point (an oracle early stop in its favour)."
              + (" **Unfinished** (the run stopped): the points measured so "
                 "far." if q.get("partial") else ""), ""]
    for r in q.get("tasks", {}).values():
      if "target_psnr" in r:
        lines += [f"**{r['task']}**: L-BFGS peaks at "
                  f"{_f(r['target_psnr'])} dB after {r['lbfgs_best_steps']} "
                  f"iterations, {_f(r['lbfgs_wall_s'])} s (final, "
                  f"{r['lbfgs_steps_reached']} iterations: "
                  f"{_f(r['lbfgs_final_psnr'])} dB); Adam reaches it after "
                  f"{_f(r['adam_wall_s_to_target'])} s: "
                  f"**{_f(r['speedup'])}x** sooner"
                  + (" (Adam's first point is already above it, so this is "
                     "a lower bound)" if r.get("adam_first_point_above")
                     else "") + ".", ""]
      if "glowip_best_psnr" in r:
        lines += [f"GlowIP's method whole (the same L-BFGS on Asim's proxy "
                  f"loss, γ = {r['asim_gamma']}) peaks at "
                  f"{_f(r['glowip_best_psnr'])} dB after "
                  f"{r['glowip_best_steps']} iterations, "
                  f"{_f(r['glowip_wall_s'])} s; Adam on the MAP objective "
                  + ("never reaches it in its points" if
                     r["speedup_vs_glowip"] is None else
                     f"reaches it after {_f(r['adam_wall_s_to_glowip'])} s: "
                     f"**{_f(r['speedup_vs_glowip'])}x**") + ".", ""]
      else:
        lines += [f"**{r['task']}**:", ""]
      lines += _table([dict(p, solver="adam") for p in r["adam"]] +
                      [dict(p, solver="lbfgs") for p in r["lbfgs"]] +
                      [dict(p, solver="lbfgs, Asim's loss")
                       for p in r.get("lbfgs_asim", [])],
                      [("solver", "solver"), ("steps", "steps"),
                       ("wall (s)", "wall_s"), ("PSNR (dB)", "psnr")]) + [""]
  if "training" in s:
    t = s["training"]
    lines += ["## Training", "",
              f"CPU preset, batch {t['batch']}: {_f(t['s_per_step'])} s/step"
              f", **{_f(t['images_per_s'], 1)} images/s** (first call "
              f"{_f(t['first_call_s'])} s).", ""]
  if "scaling" in s:
    lines += ["## Scaling with image size and depth", ""]
    lines += _table(s["scaling"]["rows"], [
        ("size", "size"), ("couplings/scale", "couplings_per_scale"),
        ("params", "params"), ("first call (s)", "first_call_s"),
        ("s/step", "s_per_step")]) + [""]
  if "chunking" in s:
    lines += ["## Steps per dispatch (chunk)", "",
              f"{s['chunking']['task']}: scanned chunks of 10 steps against "
              "one step per call.", ""]
    lines += _table(s["chunking"]["rows"], [
        ("batch", "batch"), ("chunk", "chunk"), ("s/step", "s_per_step"),
        ("compile (s)", "compile_s")]) + [""]
  if "precision" in s:
    p = s["precision"]
    lines += ["## Mixed precision (bfloat16 flow layers)", "",
              f"{p['task']}, {p['images']} images, {p['steps']} steps from "
              f"the same start: PSNR change **{_f(p['psnr_change_db'])} dB**"
              f", speed **{_f(p['speedup'])}x** of float32.", ""]
    lines += _table(p["rows"], [
        ("compute dtype", "dtype"), ("PSNR (dB)", "psnr"),
        ("s/step", "s_per_step"), ("first call (s)", "first_call_s"),
        ("non-finite steps", "non_finite_steps")]) + [""]
  if "remat" in s:
    r = s["remat"]
    d = r["remat_grad_max_abs_diff"]
    lines += ["## Remat of scanned couplings", "",
              f"Batch {r['batch']}; temporary memory from XLA's memory "
              "analysis of the compiled gradient.  Remat changes no "
              "gradient: max |difference| " + ", ".join(
                  f"{v:.2g} ({k})" for k, v in d.items()) + ".", ""]
    lines += _table(r["rows"], [
        ("gradient", "gradient"), ("scan", "scan"), ("remat", "remat"),
        ("temp (MB)", "temp_mb"), ("compile (s)", "compile_s"),
        ("s/gradient", "s_per_grad")]) + [""]
  if "memory" in s:
    m = s["memory"]
    lines += ["## Peak memory", "",
              f"Host RSS {_f(m['peak_rss_mb'], 0)} MB; device peak "
              f"{_f(m['device_peak_mb'], 0)} MB.", ""]
  return "\n".join(lines) + "\n"
