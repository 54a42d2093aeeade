"""Recovery by optimisation: jit-compiled, vmapped over examples, restarts
and hyperparameter grids.

Each example (and each restart, β and m) is its own optimisation problem with
its own optimiser state: the update is ``vmap``-ed over them, so gradient
clipping, ``optax.apply_if_finite`` and L-BFGS line searches act per example.
Shapes: ``P`` problems (a β x m grid, or 1), ``R`` restarts, ``B`` examples.

Loop: on CPU the default is a Python loop over one jitted, buffer-donating
step (convolutions inside XLA:CPU loop bodies run far slower, JAX issue
#12868); elsewhere the default runs ``chunk`` steps per call under
``lax.scan``.  β, m (``active``), the noise, the measurements and the seed
are traced arguments, so changing them never recompiles.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mapflow import objectives
from mapflow import operators as ops_lib
from mapflow import sharding


class RecoveryResult(NamedTuple):
  """Per-example results (leading axes ``[β, m]`` first for ``sweep``).

  Attributes:
    x: recovered images (..., B, H, W, C).
    z: the variable optimised: the image latents for parametrization "z",
      x itself for "x", the noise flow's latents for "noise".
    loss: final loss of the chosen restart (..., B).
    trace: loss at every step for the chosen restart (..., steps, B).
    skipped: steps whose loss or gradient was non-finite (..., B): such a
      step is skipped (``apply_if_finite``) and the iterate goes back to the
      last one with a finite loss.
  """

  x: jax.Array
  z: jax.Array
  loss: jax.Array
  trace: jax.Array
  skipped: jax.Array


DEFAULT_OPTIMIZER = optax.adam(1e-2)
# Skip non-finite steps for ever (counted), never abort a long sweep.
_MAX_ERRORS = 2 ** 30


def default_chunk() -> int:
  return 1 if jax.default_backend() == "cpu" else 50


def _full_optimizer(optimizer, clip_norm):
  parts = []
  if clip_norm is not None:
    parts.append(optax.clip_by_global_norm(clip_norm))
  parts.append(optax.with_extra_args_support(optimizer))
  return optax.apply_if_finite(optax.chain(*parts), _MAX_ERRORS)


def _batched_losses(kind, prior, generator):
  """``(v (R, B, ...), y (B, ...), h, params, operator, noise) -> (R, B)``
  for one grid point: restarts and examples flattened into one batch, so
  the flow runs batched (cheaper to compile than per-example vmaps).
  Examples never interact, so the gradient of the sum is per example."""

  def losses(v, y, h, params, operator, noise):
    op = operator if h.get("active") is None else ops_lib.with_active(
        operator, h["active"])
    r, b = v.shape[:2]
    flat = v.reshape((r * b,) + v.shape[2:])
    yy = jnp.broadcast_to(y[None], (r,) + y.shape).reshape(
        (r * b,) + y.shape[1:])
    if kind == "map":
      out = objectives.map_loss(flat, yy, prior=prior, params=params,
                                operator=op, noise=noise, beta=h["beta"])
    elif kind == "map_x":
      out = objectives.map_loss_x(flat, yy, prior=prior, params=params,
                                  operator=op, noise=noise, beta=h["beta"])
    elif kind == "map_noise":
      out = objectives.map_loss_noise(flat, yy, prior=prior, params=params,
                                      operator=op, noise=noise,
                                      beta=h["beta"])
    elif kind == "asim":
      out = objectives.asim_loss(flat, yy, prior=prior, params=params,
                                 operator=op, gamma=h["gamma"])
    elif kind == "asim_x":
      out = objectives.asim_loss_x(flat, yy, prior=prior, params=params,
                                   operator=op, gamma=h["gamma"])
    elif kind == "bora":
      out = objectives.bora_loss(flat, yy,
                                 generator=lambda z: generator(params, z),
                                 operator=op, lam=h["lam"])
    else:
      raise ValueError(kind)
    return out.reshape(r, b)

  return losses


def _over_p(fn):
  """Maps ``fn(v, y, h, *shared)`` over the grid axis P of ``v`` and ``h``.
  A single grid point is traced without vmap (a plain ``recover``)."""

  def mapped(v, y, h, *shared):
    if v.shape[0] == 1:
      out = fn(v[0], y, jax.tree_util.tree_map(lambda a: a[0], h), *shared)
      return jax.tree_util.tree_map(lambda a: a[None], out)
    return jax.vmap(fn, in_axes=(0, None, 0) + (None,) * len(shared))(
        v, y, h, *shared)

  return mapped


def _vmap_update(fn):
  """vmap ``fn(v, s, g, val, y, h, *shared)`` over B, then R, then P."""
  n = (None, None, None)
  f = jax.vmap(fn, in_axes=(0, 0, 0, 0, 0, None) + n)
  f = jax.vmap(f, in_axes=(0, 0, 0, 0, None, None) + n)
  return jax.vmap(f, in_axes=(0, 0, 0, 0, None, 0) + n)


def _where_rows(keep, a, b):
  """``where(keep, a, b)`` with ``keep`` (P, R, B) over each problem's
  trailing axes."""
  k = keep.reshape(keep.shape + (1,) * (a.ndim - keep.ndim))
  return jnp.where(k, a, b)


@functools.lru_cache(maxsize=64)
def _compiled(kind, prior, generator, optimizer, clip_norm, chunk):
  """Jitted init/step/finish functions, cached on their static parts."""
  losses = _batched_losses(kind, prior, generator)
  # One example, as a batch of one (for optimisers' line searches).
  example_loss = lambda v, y, h, *shared: losses(v[None, None], y[None], h,
                                                 *shared)[0, 0]
  opt = _full_optimizer(optimizer, clip_norm)

  def values_and_grads(v, y, h, params, operator, noise):
    def total(v):
      l = losses(v, y, h, params, operator, noise)
      return jnp.sum(l), l
    (_, l), g = jax.value_and_grad(total, has_aux=True)(v)
    return l, g

  vg = _over_p(values_and_grads)

  def update_one(v, state, g, val, y, h, params, operator, noise):
    # value_fn is traced only by optimisers that use it (line searches).
    f = lambda vv: example_loss(vv, y, h, params, operator, noise)
    upd, state = opt.update(g, state, v, value=val, grad=g, value_fn=f)
    return optax.apply_updates(v, upd), state

  upd = _vmap_update(update_one)

  def one(carry, _, y, h, params, operator, noise):
    v, (s, v_ok, l_ok, n_bad) = carry
    val, g = vg(v, y, h, params, operator, noise)
    fin = jnp.isfinite(val)                                  # (P, R, B)
    g_fin = jnp.all(jnp.isfinite(g), axis=tuple(range(3, g.ndim)))
    n_bad = n_bad + (~(fin & g_fin)).astype(n_bad.dtype)
    v_ok = _where_rows(fin, v, v_ok)
    l_ok = jnp.where(fin, val, l_ok)
    v, s = upd(v, s, g, val, y, h, params, operator, noise)
    # A step that landed where the loss is not finite is undone: its
    # gradient would be non-finite too, every later step skipped, and the
    # iterate stuck there.  Go back to the last finite iterate instead.
    v = _where_rows(fin, v, v_ok)
    return (v, (s, v_ok, l_ok, n_bad)), val

  def step(v, s, n, y, h, params, operator, noise):
    """``chunk`` scanned steps, of which the first ``n`` (traced, so a
    short last chunk needs no new compile) update the carry."""
    if chunk == 1:
      (v, s), val = one((v, s), None, y, h, params, operator, noise)
      return v, s, val[None]

    def masked(carry, i):
      new, val = one(carry, None, y, h, params, operator, noise)
      keep = i < n
      carry = jax.tree_util.tree_map(
          lambda a, b: jnp.where(keep, a, b), new, carry)
      return carry, val

    (v, s), vals = jax.lax.scan(masked, (v, s), jnp.arange(chunk))
    return v, s, vals

  def init(v):
    """Optimiser state, the last finite iterate, its loss, and the count
    of steps with a non-finite loss or gradient."""
    f = jax.vmap(jax.vmap(jax.vmap(opt.init)))
    return (f(v), v, jnp.full(v.shape[:3], jnp.inf, v.dtype),
            jnp.zeros(v.shape[:3], jnp.int32))

  def finish(v, state, y, h, params, operator, noise):
    """Final losses, the best restart per example, and its image."""
    _, v_ok, l_ok, notfinite = state
    final = _over_p(losses)(v, y, h, params, operator, noise)  # (P, R, B)
    fin = jnp.isfinite(final)
    v = _where_rows(fin, v, v_ok)
    final = jnp.where(fin, final, l_ok)
    best = jnp.argmin(jnp.where(jnp.isfinite(final), final, jnp.inf), axis=1)
    pick = lambda a: jnp.take_along_axis(
        a, best.reshape(best.shape[:1] + (1,) + best.shape[1:] +
                        (1,) * (a.ndim - 3)), axis=1)[:, 0]
    v_best = pick(v)                                           # (P, B, ...)
    flat = v_best.reshape((-1,) + v_best.shape[2:])
    if kind == "bora":
      x = generator(params, flat)
      x = x.reshape(v_best.shape[:2] + x.shape[1:])
    elif kind in ("map_x", "asim_x"):
      x = v_best
    elif kind == "map_noise":
      yy = jnp.broadcast_to(y[None], v_best.shape[:1] + y.shape)
      delta = noise.latent_to_noise(flat)[0].reshape(v_best.shape)
      x = operator.inverse(yy - delta)
    else:
      x = None  # by the caller, with the flow's forward shared across kinds
    return best, v_best, pick(final[..., None])[..., 0], pick(
        notfinite[..., None])[..., 0], x

  # The carry leaves come out laid out as they go in (examples split over
  # the mesh): left to XLA, small leaves come back replicated, and the
  # second call, fed them, would compile the step again.
  step_for_mesh = _PerMesh(lambda mesh: jax.jit(
      step, donate_argnums=(0, 1),
      out_shardings=(sharding.along(mesh, 2), sharding.along(mesh, 2),
                     sharding.along(mesh, 3))))
  return jax.jit(init), step_for_mesh, jax.jit(finish)


class _PerMesh:
  """``fn(*args, mesh=...)``: one jitted function per mesh, made on first
  use; ``_cache_size()`` counts compiles over all of them."""

  def __init__(self, make):
    self._make, self._fns = make, {}

  def __call__(self, *args, mesh):
    if mesh not in self._fns:
      self._fns[mesh] = self._make(mesh)
    return self._fns[mesh](*args)

  def _cache_size(self):
    return sum(f._cache_size() for f in self._fns.values())


# ``(noise, delta) -> w``, compiled once per noise model's structure.
_noise_to_latent = jax.jit(lambda n, delta: n.noise_to_latent(delta))


@functools.lru_cache(maxsize=64)
def _flow_fns(prior):
  """Jitted ``x -> z`` and ``z -> x`` of a flow: run eagerly, a flow is
  hundreds of separately dispatched (and separately compiled) ops."""
  inverse = jax.jit(lambda params, x: prior.inverse(params, x)[0])
  forward = jax.jit(lambda params, z: prior.forward(params, z)[0])
  return inverse, forward


def _check_inputs(y, operator, noise, image_shape, hyper):
  y = jnp.asarray(y)
  if not bool(jnp.all(jnp.isfinite(y))):
    raise ValueError(f"y: got non-finite values ({int(jnp.sum(~jnp.isfinite(y)))}"
                     " entries), expected finite measurements")
  want = jax.eval_shape(operator, jax.ShapeDtypeStruct(
      (y.shape[0],) + tuple(image_shape), jnp.float32)).shape
  if tuple(y.shape) != tuple(want):
    raise ValueError(f"y: got shape {tuple(y.shape)}, expected {tuple(want)} "
                     f"(batch, then the operator's output for images "
                     f"{tuple(image_shape)})")
  if noise is not None:
    ev = tuple(getattr(noise, "event_shape", ()) or ())
    if ev and ev != tuple(y.shape[1:]):
      raise ValueError(f"noise: event shape {ev} does not fit measurements of "
                       f"shape {tuple(y.shape[1:])}")
  for name in ("beta", "gamma", "lam"):
    if name in hyper:
      v = np.asarray(hyper[name])
      if np.any(v < 0) or not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: got {v.tolist()}, expected finite values "
                         ">= 0")
  if hyper.get("active") is not None:
    m = ops_lib.max_rows(operator)
    a = np.asarray(hyper["active"])
    if m is None:
      raise ValueError("ms: the operator has no Gaussian matrix whose rows "
                       "could be masked")
    if np.any(a > m) or np.any(a < 0):
      raise ValueError(f"active: got {a.tolist()}, expected 0 <= active <= "
                       f"m = {m}")
  return y


def _latent_shape(y, image_shape, parametrization):
  """One example's optimised variable: the measurement's shape for the
  noise latent, the image's otherwise."""
  return (tuple(jnp.shape(y)[1:]) if parametrization == "noise"
          else tuple(image_shape))


def _initial_latents(init, key, restarts, y, prior, params, operator,
                     image_shape, init_std, parametrization, init_range,
                     noise_model=None):
  shape = (restarts, y.shape[0]) + _latent_shape(y, image_shape,
                                                 parametrization)
  key = jax.random.PRNGKey(0) if key is None else key
  noise = init_std * jax.random.normal(key, shape)
  if isinstance(init, str) and parametrization == "noise":
    if init == "zeros":
      return jnp.zeros(shape)
    if init == "random":
      return noise
    if init == "measurements":
      # The residual the measurement start leaves, as a noise latent.
      x0 = measurement_init(y, operator, image_shape, *init_range)
      w0 = _noise_to_latent(noise_model, y - operator(x0))
      return w0[None] + noise.at[0].set(0.0)
  if isinstance(init, str):
    if init == "zeros":
      base = jnp.zeros(shape)
      if parametrization == "x":
        base = jnp.broadcast_to(_flow_fns(prior)[1](params, base[0]), shape)
      return base
    if init == "random":
      if parametrization == "x":
        fwd = _flow_fns(prior)[1]
        return jnp.stack([fwd(params, n) for n in noise])
      return noise
    if init == "measurements":
      x0 = measurement_init(y, operator, image_shape, *init_range)
      if parametrization == "x":
        base = x0
      else:
        base = _flow_fns(prior)[0](params, x0)
      # Restart 0 starts at the estimate; the others nearby.
      jitter = noise.at[0].set(0.0)
      return base[None] + jitter
    raise ValueError(f"init: got {init!r}, expected 'zeros', 'random', "
                     "'measurements' or an array")
  arr = jnp.asarray(init)
  if arr.shape == shape[1:]:
    arr = jnp.broadcast_to(arr, shape)
  if arr.shape != shape:
    raise ValueError(f"init: got an array of shape {arr.shape}, expected "
                     f"{shape[1:]} or {shape}")
  return arr


def _check_noise_parametrization(operator, noise):
  if not hasattr(operator, "inverse"):
    raise ValueError(
        f"operator: parametrization 'noise' needs an invertible operator "
        f"(with inverse(y): identity, scale); got {type(operator).__name__}")
  if not hasattr(noise, "latent_to_noise"):
    raise ValueError(
        f"noise: parametrization 'noise' needs flow noise "
        f"(mapflow.noise.from_flow); got {type(noise).__name__}")


def measurement_init(y, operator, image_shape, lo=0.02, hi=0.98):
  """An image estimate from the measurements (back-projection), clipped."""
  if not hasattr(operator, "back_project"):
    raise ValueError(f"init: 'measurements' needs an operator with "
                     f"back_project; {type(operator).__name__} has none")
  bp = operator.back_project(y).reshape((y.shape[0],) + tuple(image_shape))
  if isinstance(operator, ops_lib.OneBit):
    # sign measurements carry direction only: centre and set a spread.
    bp = bp - jnp.mean(bp, axis=(1, 2, 3), keepdims=True)
    bp = operator.center + 0.25 * bp / (
        jnp.std(bp, axis=(1, 2, 3), keepdims=True) + 1e-8)
  return jnp.clip(bp, lo, hi)


def _run(kind, y, *, prior, params, operator, noise, hyper, steps, optimizer,
         restarts, init, init_std, key, clip_norm, progress, chunk,
         generator=None, image_shape=None, parametrization="z", check=True,
         devices=None, init_range=(0.02, 0.98), points_per_call=None,
         init_per_point=False):
  """Checks the inputs and computes the starts once, then runs the P grid
  points in groups of ``points_per_call`` (None: all at once) through one
  compiled step; the last group is padded with copies of the last point.
  With ``init_per_point``, ``init`` holds each point's latents (P, [R,] B,
  ...) instead of one start shared by all points."""
  image_shape = tuple(image_shape or prior.config.image_shape)
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps: got {steps!r}, expected an int >= 1")
  if not isinstance(restarts, int) or restarts < 1:
    raise ValueError(f"restarts: got {restarts!r}, expected an int >= 1")
  if check:
    y = _check_inputs(y, operator, noise, image_shape, hyper)
  if parametrization == "noise":
    _check_noise_parametrization(operator, noise)
  latent_shape = _latent_shape(y, image_shape, parametrization)
  optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
  chunk = default_chunk() if chunk is None else int(chunk)
  hyper = {k: (None if v is None else jnp.atleast_1d(jnp.asarray(
      v, jnp.int32 if k == "active" else jnp.float32)))
           for k, v in hyper.items()}
  p = max(v.shape[0] for v in hyper.values() if v is not None)
  hyper = {k: (None if v is None else jnp.broadcast_to(v, (p,)))
           for k, v in hyper.items()}
  fns = _compiled(kind, prior, generator, optimizer, clip_norm, chunk)
  lo, hi = (float(v) for v in init_range)
  if not lo < hi:
    raise ValueError(f"init_range: got {init_range!r}, expected (lo, hi) "
                     "with lo < hi")
  if init_per_point:
    # One start per grid point: (P, B, ...) or (P, R, B, ...).
    v0 = jnp.asarray(init, jnp.float32)
    if v0.ndim == len(image_shape) + 2:
      v0 = jnp.broadcast_to(v0[:, None], (p, restarts) + v0.shape[1:])
    want = (p, restarts, y.shape[0]) + latent_shape
    if v0.shape != want:
      raise ValueError(f"init: got per-point latents of shape {v0.shape}, "
                       f"expected {want}")
  else:
    v0 = _initial_latents(init, key, restarts, y, prior, params, operator,
                          image_shape, init_std, parametrization, (lo, hi),
                          noise)
  # Data parallel: examples split over the mesh (padded to a multiple of
  # its size with copies of the last one, dropped at the end).
  mesh = sharding.batch_mesh(devices)
  n_real = y.shape[0]
  y, _ = sharding.pad_along(jnp.asarray(y), mesh.size, 0)
  v0, _ = sharding.pad_along(v0, mesh.size, 2 if init_per_point else 1)
  y = sharding.shard_along(y, mesh, 0)
  params, operator, noise = sharding.replicate((params, operator, noise),
                                               mesh)
  per = p if points_per_call is None else min(p, points_per_call)
  forward = None if prior is None else _flow_fns(prior)[1]
  parts = []
  for start in range(0, p, per):
    idx = np.minimum(np.arange(start, start + per), p - 1)
    h = sharding.replicate(
        {k: None if v is None else v[idx] for k, v in hyper.items()}, mesh)
    v0_h = (v0[idx] if init_per_point
            else jnp.broadcast_to(v0, (len(idx),) + v0.shape))
    part = _run_points(fns, forward, v0_h, y, h, params, operator, noise,
                       steps, chunk, progress, mesh)
    keep = min(per, p - start)
    x, z, loss, trace, skipped = part
    parts.append((x[:keep, :n_real], z[:keep, :n_real], loss[:keep, :n_real],
                  trace[:keep, :, :n_real], skipped[:keep, :n_real]))
  if len(parts) == 1:
    x, z, loss, trace, skipped = parts[0]
  else:
    x, z, loss, skipped = (jnp.concatenate([q[i] for q in parts])
                           for i in (0, 1, 2, 4))
    trace = np.concatenate([q[3] for q in parts])
  return RecoveryResult(x, z, loss, jnp.asarray(trace), skipped)


def _run_points(fns, forward, v0, y, hyper, params, operator, noise, steps,
                chunk, progress, mesh):
  """The step loop and finish for one group of grid points, from latents
  ``v0`` (P, R, B+pad, ...).  Returns
  x, z, loss (P, B+pad, ...), the chosen restart's trace (P, steps, B+pad)
  as numpy, and the non-finite step count."""
  init_fn, step_fn, finish_fn = fns
  v = jnp.array(v0)  # a copy: the step donates it
  v = sharding.shard_along(v, mesh, 2)
  # Laid out like the step's output state, so the step compiles only once.
  state = sharding.shard_along(init_fn(v), mesh, 2)
  trace = []
  done = 0
  while done < steps:
    n = min(chunk, steps - done)
    v, state, vals = step_fn(v, state, jnp.int32(n), y, hyper, params,
                             operator, noise, mesh=mesh)
    trace.append(vals[:n])
    done += n
    if progress is not None:
      progress(done, vals[n - 1])
  # The trace is assembled on the host: eager XLA ops on a (steps, ...)
  # array would compile anew for every distinct step count.
  trace = np.concatenate([np.asarray(t) for t in trace])  # (steps, P, R, B)
  best, v_best, loss, skipped, x = finish_fn(
      v, state, y, hyper, params, operator, noise)
  if x is None:
    flat = v_best.reshape((-1,) + v_best.shape[2:])
    x = forward(params, flat)
    x = x.reshape(v_best.shape[:2] + x.shape[1:])
  best_h = np.asarray(best)
  trace_best = np.take_along_axis(
      trace, np.broadcast_to(best_h[None, :, None], (trace.shape[0],) +
                             best_h.shape[:1] + (1,) + best_h.shape[1:]),
      axis=2)[:, :, 0]
  return x, v_best, loss, np.moveaxis(trace_best, 0, 1), skipped


_MAP_KINDS = {"z": "map", "x": "map_x", "noise": "map_noise"}


def _map_kind(parametrization):
  if parametrization not in _MAP_KINDS:
    raise ValueError(f"parametrization: got {parametrization!r}, expected "
                     f"one of {tuple(_MAP_KINDS)}")
  return _MAP_KINDS[parametrization]


def _squeeze_p(res: RecoveryResult) -> RecoveryResult:
  return RecoveryResult(*(a[0] for a in res))


def recover(y, *, prior, params, operator, noise, beta=1.0, steps=1000,
            optimizer=None, restarts=1, init="zeros", init_std=0.1, key=None,
            clip_norm=None, progress=None, chunk=None,
            parametrization="z", devices=None,
            init_range=(0.02, 0.98)) -> RecoveryResult:
  """MAP recovery (paper eq. 12) of a batch from measurements ``y``.

  Args:
    y: measurements (B, *measurement shape).
    prior: a ``Flow``; params: its params.
    operator: a forward operator from ``mapflow.operators``.
    noise: a noise distribution (``mapflow.noise`` or any distrax one).
    beta: the smoothing parameter β >= 0.
    steps: optimiser steps.
    optimizer: any optax optimiser (default Adam, lr 1e-2; ``optax.lbfgs()``
      works).  Reuse one object across calls to reuse compiled code.
    restarts: independent starts per example; each example keeps the one
      with the lowest final loss (never a choice that looks at ground truth).
    init: "zeros", "random" (std ``init_std``), "measurements"
      (back-projection, clipped to ``init_range``), or an array of latents.
    key: PRNG key for random inits.
    clip_norm: per-example gradient clipping by global norm (None: off).
    progress: ``callback(steps_done, loss)``, e.g. to drive tqdm.
    chunk: steps per compiled call (None: 1 on CPU, 50 elsewhere).
    parametrization: what the optimiser moves: "z" (the image latent, the
      paper's choice), "x" (the image), or "noise" (the noise flow's latent
      w, with ``x = f⁻¹(y - G_Δ(w))``: needs ``mapflow.noise.from_flow``
      noise and an invertible operator).  The objective is eq. 12 in
      each; "noise" keeps the residual on the noise flow's support, which
      helps when that support is thin (digit noise).
    init_range: (lo, hi) pixel bounds of the "measurements" start.  Where
      the noise std is tiny (RADIAL's corners), bounds inside the data range
      start those pixels far off in units of std: use (0, 1) there.
    devices: devices to split the examples over (data parallel, params
      replicated; default all of ``jax.devices()``).  Results do not depend
      on the device count.

  Returns:
    A ``RecoveryResult``.
  """
  kind = _map_kind(parametrization)
  return _squeeze_p(_run(
      kind, y, prior=prior, params=params, operator=operator, noise=noise,
      hyper={"beta": beta}, steps=steps, optimizer=optimizer,
      restarts=restarts, init=init, init_std=init_std, key=key,
      clip_norm=clip_norm, progress=progress, chunk=chunk,
      parametrization=parametrization, devices=devices,
      init_range=init_range))


def recover_asim(y, *, prior, params, operator, gamma=0.1, steps=1000,
                 optimizer=None, restarts=1, init="zeros", init_std=0.1,
                 key=None, clip_norm=None, progress=None,
                 chunk=None, devices=None,
                 init_range=(0.02, 0.98),
                 parametrization="z") -> RecoveryResult:
  """Asim et al.'s proxy loss (eq. 9) through the same machinery.

  ``parametrization`` is "z" (the latent, as Asim et al. do) or "x" (the
  image itself, ``objectives.asim_loss_x``: the same loss at
  ``z = G⁻¹(x)``)."""
  kinds = {"z": "asim", "x": "asim_x"}
  if parametrization not in kinds:
    raise ValueError(f"parametrization: got {parametrization!r}, expected "
                     f"one of {tuple(kinds)}")
  return _squeeze_p(_run(
      kinds[parametrization], y, prior=prior, params=params, operator=operator, noise=None,
      hyper={"gamma": gamma}, steps=steps, optimizer=optimizer,
      restarts=restarts, init=init, init_std=init_std, key=key,
      clip_norm=clip_norm, progress=progress, chunk=chunk, devices=devices,
      init_range=init_range, parametrization=parametrization))


def recover_bora(y, *, generator, operator, latent_shape, lam=0.1,
                 steps=1000, optimizer=None, restarts=1, init="random",
                 init_std=1.0, key=None, clip_norm=None, progress=None,
                 chunk=None, image_shape=None, devices=None,
                 generator_params=None) -> RecoveryResult:
  """Bora et al.'s loss (eq. 4) for any generator.

  ``generator`` maps one latent of ``latent_shape`` (e.g. (20,) for the
  VAE) to one image: ``generator(z)``, or ``generator(generator_params, z)``
  when ``generator_params`` is given (e.g. ``mapflow.vae.decoder`` and the
  VAE's params, which then stay arguments of the compiled program).  Reuse
  one generator object across calls to reuse compiled code.
  """
  latent_shape = tuple(latent_shape)
  with_params = generator_params is not None
  one = ((lambda z: generator(generator_params, z)) if with_params
         else generator)
  img = image_shape or jax.eval_shape(
      one, jax.ShapeDtypeStruct(latent_shape, jnp.float32)).shape
  y = jnp.asarray(y)
  _check_inputs(y, operator, None, img, {"lam": lam})
  gen_b = _BatchedGenerator(generator, with_params)
  return _squeeze_p(_run(
      "bora", y, prior=None, params=generator_params, operator=operator,
      noise=None,
      hyper={"lam": lam}, steps=steps, optimizer=optimizer, restarts=restarts,
      init=init, init_std=init_std, key=key, clip_norm=clip_norm,
      progress=progress, chunk=chunk, generator=gen_b,
      image_shape=latent_shape, check=False, devices=devices))


class _BatchedGenerator:
  """``(params, z batch) -> x batch`` from a per-example generator
  (``fn(z)``, params ignored, or ``fn(params, z)``); hashable by identity
  of the wrapped function, so compiled code is reused."""

  def __init__(self, fn, with_params):
    self.fn, self.with_params = fn, with_params

  def __call__(self, params, z):
    if self.with_params:
      return jax.vmap(self.fn, in_axes=(None, 0))(params, z)
    return jax.vmap(self.fn)(z)

  def __hash__(self):
    return hash((self.fn, self.with_params))

  def __eq__(self, other):
    return (isinstance(other, _BatchedGenerator) and other.fn is self.fn
            and other.with_params == self.with_params)


def sweep(y, *, prior, params, operator, noise, betas, ms=None, steps=1000,
          optimizer=None, restarts=1, init="zeros", init_std=0.1, key=None,
          clip_norm=None, progress=None, chunk=None,
          devices=None, init_range=(0.02, 0.98),
          max_batch=None, parametrization="z") -> RecoveryResult:
  """A β x m grid of MAP recoveries in one compiled program.

  ``ms`` (optional) are measurement counts: the operator's Gaussian matrix
  must have ``max(ms)`` rows or more, and ``y`` is its full output; rows at
  or beyond each ``m`` are masked.  Results are indexed ``[β, m, example]``
  (``[β, 0, example]`` without ``ms``) and equal separate ``recover`` calls
  with ``operators.with_active(operator, m)``.

  ``max_batch`` bounds grid points x restarts x examples per call: the grid
  then runs in the fewest equal groups of points, one after another,
  through the same compiled program (the last group is padded with copies
  of the last point, which are dropped); the starts are computed once.
  ``None`` runs the whole grid at once.  ``progress`` is called per group.

  ``init`` takes what ``recover`` takes, shared by every grid point, or one
  start per point: latents of shape (len(betas), len(ms) or 1, [restarts,]
  B, *latent shape), such as the ``z`` of an earlier sweep over the same
  grid.  That continues each point from its own earlier solution.
  ``parametrization`` is as in ``recover``.
  """
  kind = _map_kind(parametrization)
  if max_batch is not None and (not isinstance(max_batch, int)
                                or max_batch < 1):
    raise ValueError(f"max_batch: got {max_batch!r}, expected None or an "
                     "int >= 1")
  betas = jnp.atleast_1d(jnp.asarray(betas, jnp.float32))
  if ms is None:
    grid = {"beta": betas, "active": None}
    nm = 1
  else:
    ms_arr = jnp.atleast_1d(jnp.asarray(ms, jnp.int32))
    nm = ms_arr.shape[0]
    grid = {"beta": jnp.repeat(betas, nm), "active": jnp.tile(ms_arr,
                                                               betas.shape[0])}
  n_points = betas.shape[0] * nm
  per_call = None
  if max_batch is not None:
    per_call = max(1, max_batch // (restarts * jnp.shape(y)[0]))
    per_call = -(-n_points // -(-n_points // per_call))  # balanced groups
  latent_rank = len(_latent_shape(y, prior.config.image_shape,
                                  parametrization))
  per_point = (not isinstance(init, str)
               and jnp.ndim(init) in (latent_rank + 3, latent_rank + 4))
  if per_point:
    init = jnp.asarray(init)
    if init.shape[:2] != (betas.shape[0], nm):
      raise ValueError(f"init: got per-point latents of shape {init.shape},"
                       f" expected ({betas.shape[0]}, {nm}, [restarts,] B, "
                       "...) for this grid")
    init = init.reshape((n_points,) + init.shape[2:])
  res = _run(kind, y, prior=prior, params=params, operator=operator,
             noise=noise, hyper=grid, steps=steps, optimizer=optimizer,
             restarts=restarts, init=init, init_std=init_std, key=key,
             clip_norm=clip_norm, progress=progress, chunk=chunk,
             devices=devices, init_range=init_range,
             points_per_call=per_call, init_per_point=per_point,
             parametrization=parametrization)
  nb = betas.shape[0]
  return RecoveryResult(*(a.reshape((nb, nm) + a.shape[1:]) for a in res))
