"""The solver engine: any ``Objective``, minimised per example under jit.

Each example (and each restart and grid point) is its own optimisation
problem with its own optimiser state: the update is ``vmap``-ed over them,
so gradient clipping (``optax.chain(optax.clip_by_global_norm(c), ...)``),
``optax.apply_if_finite`` and L-BFGS line searches act per example.
Shapes: ``P`` grid points (β x m, or 1), ``R`` restarts, ``B`` examples.

Loop: on CPU the default is a Python loop over one jitted, buffer-donating
step (convolutions inside XLA:CPU loop bodies run far slower, JAX issue
#12868); elsewhere the default runs ``chunk`` steps per call under
``lax.scan``.  The grid's values (``hyper``), the measurements, ``data``
and the seed are traced arguments, so changing them never recompiles.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mapflow import objectives
from mapflow import operators as ops_lib
from mapflow import sharding
from mapflow.objectives import Objective
from mapflow.solve import starts as starts_lib
from mapflow import xla


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


class SolverConfig(NamedTuple):
  """The rarer knobs of a solve (``steps`` and ``optimizer`` are
  arguments of their own).

  Attributes:
    init: "zeros", "random" (latents ~ N(0, ``init_std``²)),
      "measurements" (the clipped back-projection of y, through the
      objective's ``from_image``), or an array of starts (B, ...) or
      (R, B, ...).
    restarts: independent starts per example; each example keeps the one
      with the lowest final loss (never a look at ground truth).
    init_std: std of the random starts (and of the jitter of restarts
      after the first from the measurements).
    init_range: (lo, hi) pixel bounds of the measurement start.
    parametrization: what moves (the objective the wrappers build): "z",
      "x" or "noise" (see ``objectives.map_objective``).
    chunk: steps per compiled call (None: 1 on CPU, 50 elsewhere).
    devices: devices to split the examples over (default all).
    max_batch: grid points x restarts x examples per call in a sweep (the
      grid then runs in equal groups through one compiled program); None:
      the backend's default (``default_max_batch``).
    progress: ``callback(steps_done, loss)``, e.g. to drive tqdm.
    key: PRNG key of the random starts (default ``PRNGKey(0)``).
  """

  init: Any = "zeros"
  restarts: int = 1
  init_std: float = 0.1
  init_range: tuple = (0.02, 0.98)
  parametrization: str = "z"
  chunk: Optional[int] = None
  devices: Optional[Sequence[Any]] = None
  max_batch: Optional[int] = None
  progress: Optional[Callable[[int, Any], None]] = None
  key: Optional[jax.Array] = None


# The default Adam learning rate, in units of a unit-scale latent (the
# value the experiments validated for their latent starts).
DEFAULT_LEARNING_RATE = 0.03
DEFAULT_OPTIMIZER = optax.adam(DEFAULT_LEARNING_RATE)
# Skip non-finite steps for ever (counted), never abort a long sweep.
_MAX_ERRORS = 2 ** 30


def default_chunk() -> int:
  return 1 if jax.default_backend() == "cpu" else 50


def default_max_batch() -> Optional[int]:
  """Images per sweep call by default: 256 on CPU, where a compute-bound
  step runs no faster at a larger batch and a moderate one is cheaper to
  hold (BENCHMARKS.md, "β x m sweep"); the whole grid elsewhere."""
  return 256 if jax.default_backend() == "cpu" else None


def _batched_losses(objective: Objective, loss_and_image=None):
  """``(v (R, B, ...), y (B, ...), h, data) -> (R, B)`` for one grid point:
  restarts and examples flattened into one batch, so the objective runs
  batched (cheaper to compile than per-example vmaps).  Examples never
  interact, so the gradient of the sum is per example.  With
  ``loss_and_image`` (``objectives.images_with_loss``) in place of the
  loss: ``((R, B), x (R, B, ...))``."""

  def losses(v, y, h, data):
    r, b = v.shape[:2]
    flat = v.reshape((r * b,) + v.shape[2:])
    yy = jnp.broadcast_to(y[None], (r,) + y.shape).reshape(
        (r * b,) + y.shape[1:])
    if loss_and_image is not None:
      l, x = loss_and_image(flat, yy, {**data, **h})
      return l.reshape(r, b), x.reshape((r, b) + x.shape[1:])
    return objective.loss(flat, yy, {**data, **h}).reshape(r, b)

  return losses


def _over_p(fn):
  """Maps ``fn(v, y, h, data)`` over the grid axis P of ``v`` and ``h``.
  A single grid point is traced without vmap (a plain ``recover``)."""

  def mapped(v, y, h, data):
    if v.shape[0] == 1:
      out = fn(v[0], y, jax.tree_util.tree_map(lambda a: a[0], h), data)
      return jax.tree_util.tree_map(lambda a: a[None], out)
    return jax.vmap(fn, in_axes=(0, None, 0, None))(v, y, h, data)

  return mapped


def _vmap_update(fn):
  """vmap ``fn(v, s, g, val, y, h, data)`` over B, then R, then P."""
  f = jax.vmap(fn, in_axes=(0, 0, 0, 0, 0, None, None))
  f = jax.vmap(f, in_axes=(0, 0, 0, 0, None, None, None))
  return jax.vmap(f, in_axes=(0, 0, 0, 0, None, 0, None))


def _where_rows(keep, a, b):
  """``where(keep, a, b)`` with ``keep`` (P, R, B) over each problem's
  trailing axes."""
  k = keep.reshape(keep.shape + (1,) * (a.ndim - keep.ndim))
  return jnp.where(k, a, b)


@functools.lru_cache(maxsize=64)
def compiled(objective: Objective, optimizer, chunk: int):
  """Jitted ``(init, step, finish, final_losses)`` of an objective and
  optimiser, cached on them (so reuse one object of each to reuse compiled
  code).  ``step._cache_size()`` counts the step's compiles.

  Calls: ``init(v0, points, mesh=)`` -> ``(v, state)``;
  ``step(v, state, n, y, h, data, mesh=)`` -> ``(v, state, vals)``, and
  with ``chunk`` 1 also the images of the iterate it started from;
  ``finish(v, state, vals, i[, x], mesh=)`` -> ``(best, v_best, loss,
  skipped[, x_best])`` with the final losses ``vals[i]``; ``final_losses(v, y, h,
  data)`` -> (1, P, R, B)."""
  losses = _batched_losses(objective)
  # One example, as a batch of one (for optimisers' line searches).
  example_loss = lambda v, y, h, data: losses(v[None, None], y[None], h,
                                              data)[0, 0]
  opt = optax.apply_if_finite(optax.with_extra_args_support(optimizer),
                              _MAX_ERRORS)

  def values_and_grads(v, y, h, data):
    def total(v):
      l = losses(v, y, h, data)
      return jnp.sum(l), l
    (_, l), g = jax.value_and_grad(total, has_aux=True)(v)
    return l, g

  vg = _over_p(values_and_grads)

  def update_one(v, state, g, val, y, h, data):
    # value_fn is traced only by optimisers that use it (line searches).
    f = lambda vv: example_loss(vv, y, h, data)
    # A gradient whose square overflows would put inf in Adam's second
    # moment for good (every later update 0, nothing reported): such a
    # step is skipped like a non-finite one.
    g = jnp.where(_gradient_ok(g), g, jnp.nan)
    upd, state = opt.update(g, state, v, value=val, grad=g, value_fn=f)
    return optax.apply_updates(v, upd), state

  upd = _vmap_update(update_one)

  def point_images(v, y, h, data):
    # Batched over restarts and examples as the losses are (and mapped
    # over the grid by _over_p as they are), so XLA can share the work.
    r, b = v.shape[:2]
    flat = v.reshape((r * b,) + v.shape[2:])
    yy = jnp.broadcast_to(y[None], (r,) + y.shape).reshape(
        (r * b,) + y.shape[1:])
    x = objective.to_image(flat, yy, data)
    return x.reshape((r, b) + x.shape[1:])

  # The images of every iterate (P, R, B, ...), which the step returns so
  # that recover needs no decoder program.  A loss with
  # ``loss_and_image`` hands over the images it computed; otherwise
  # they are computed beside it, and XLA may or may not merge the two
  # forward passes (it did not for Glow: a step 1.3x slower).
  images = _over_p(point_images)

  with_images = objectives.images_with_loss(objective)
  if with_images is not None:
    losses_x = _batched_losses(objective, with_images)

    def values_grads_images(v, y, h, data):
      def total(v):
        l, x = losses_x(v, y, h, data)
        return jnp.sum(l), (l, x)
      (_, (l, x)), g = jax.value_and_grad(total, has_aux=True)(v)
      return l, g, x

    vgx = _over_p(values_grads_images)
  else:
    def vgx(v, y, h, data):
      x = images(v, y, h, data)
      return (*vg(v, y, h, data), x)

  def advance(carry, val, g, y, h, data):
    """The carry after one update, given the loss and gradient at it."""
    v, (s, v_ok, l_ok, n_bad) = carry
    fin = jnp.isfinite(val)                                  # (P, R, B)
    g_fin = _gradient_ok(g, axis=tuple(range(3, g.ndim)))
    n_bad = n_bad + (~(fin & g_fin)).astype(n_bad.dtype)
    v_ok = _where_rows(fin, v, v_ok)
    l_ok = jnp.where(fin, val, l_ok)
    v, s = upd(v, s, g, val, y, h, data)
    # A step that landed where the loss is not finite is undone: its
    # gradient would be non-finite too, every later step skipped, and the
    # iterate stuck there.  Go back to the last finite iterate instead.
    v = _where_rows(fin, v, v_ok)
    return v, (s, v_ok, l_ok, n_bad)

  def one(carry, _, y, h, data):
    val, g = vg(carry[0], y, h, data)
    return advance(carry, val, g, y, h, data), val

  def step(v, s, n, y, h, data):
    """``chunk`` scanned steps, of which the first ``n`` (traced, so a
    short last chunk needs no new compile) update the carry."""
    if chunk == 1:
      val, g, x = vgx(v, y, h, data)
      v, s = advance((v, s), val, g, y, h, data)
      return v, s, val[None], x

    def masked(carry, i):
      new, val = one(carry, None, y, h, data)
      keep = i < n
      carry = jax.tree_util.tree_map(
          lambda a, b: jnp.where(keep, a, b), new, carry)
      return carry, val

    (v, s), vals = jax.lax.scan(masked, (v, s), jnp.arange(chunk))
    return v, s, vals

  def init(v0, points):
    """The first iterate (P, R, B, ...): a fresh copy of the starts ``v0``,
    which are (R, B, ...) shared by ``points`` grid points, or already
    (P, R, B, ...) where ``points`` is None; and the state: the optimiser's,
    the last finite iterate, its loss, and the count of steps with a
    non-finite loss or gradient.  One program, so that the broadcast and
    the copy compile nothing of their own."""
    v = jnp.copy(v0 if points is None
                 else jnp.broadcast_to(v0, (points,) + v0.shape))
    f = jax.vmap(jax.vmap(jax.vmap(opt.init)))
    return v, (f(v), v, jnp.full(v.shape[:3], jnp.inf, v.dtype),
               jnp.zeros(v.shape[:3], jnp.int32))

  def finish(v, state, vals, i, x=None):
    """The best restart per example, and its variable, given the final
    iterate's losses ``vals[i]`` (P, R, B); with ``x``, the final
    iterate's images (P, R, B, ...), also the best restart's image."""
    _, v_ok, l_ok, notfinite = state
    final = vals[i]
    fin = jnp.isfinite(final)
    v = _where_rows(fin, v, v_ok)
    final = jnp.where(fin, final, l_ok)
    best = jnp.argmin(jnp.where(jnp.isfinite(final), final, jnp.inf), axis=1)
    pick = lambda a: jnp.take_along_axis(
        a, best.reshape(best.shape[:1] + (1,) + best.shape[1:] +
                        (1,) * (a.ndim - 3)), axis=1)[:, 0]
    out = (best, pick(v), pick(final[..., None])[..., 0], pick(
        notfinite[..., None])[..., 0])
    return out if x is None else out + (pick(x),)

  # The carry leaves come out laid out as they go in (examples split over
  # the mesh): left to XLA, small leaves come back replicated, and the
  # second call, fed them, would compile the step again.
  step_for_mesh = _PerMesh(lambda mesh: jax.jit(
      step, donate_argnums=(0, 1), compiler_options=xla.step_options(),
      out_shardings=(sharding.along(mesh, 2), sharding.along(mesh, 2),
                     sharding.along(mesh, 3)) + (
                         (sharding.along(mesh, 2),) if chunk == 1 else ())))
  # The examples stay split over the mesh from init to finish.
  once = functools.partial(jax.jit, compiler_options=xla.run_once_options())
  init_for_mesh = _PerMesh(lambda mesh: once(
      init, static_argnums=(1,), out_shardings=sharding.along(mesh, 2)))
  finish_for_mesh = _PerMesh(lambda mesh: once(
      finish, out_shardings=sharding.along(mesh, 1)))
  final_losses = once(
      lambda v, y, h, data: _over_p(losses)(v, y, h, data)[None])
  return init_for_mesh, step_for_mesh, finish_for_mesh, final_losses


# Largest gradient entry whose square (in an optimiser's statistics) stays
# finite in float32, with room to spare.
GRAD_LIMIT = 1e18


def _gradient_ok(g, axis=None):
  return jnp.all(jnp.isfinite(g) & (jnp.abs(g) < GRAD_LIMIT), axis=axis)


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


@functools.lru_cache(maxsize=64)
def _to_image(fn):
  """A jitted ``to_image`` (objectives over one flow share theirs)."""
  return jax.jit(fn, compiler_options=xla.run_once_options())


@functools.lru_cache(maxsize=64)
def _decode(fn):
  """``(v (P, B, ...), y (B, ...), data) -> x (P, B, ...)``: the jitted
  ``to_image`` of every grid point's chosen variable, flattening and
  broadcasting inside the program (objectives over one flow share it)."""

  def decode(v, y, data):
    p, b = v.shape[:2]
    flat = v.reshape((p * b,) + v.shape[2:])
    yy = None if y is None else jnp.broadcast_to(
        y[None], (p,) + y.shape).reshape((p * b,) + y.shape[1:])
    x = fn(flat, yy, data)
    return x.reshape((p, b) + x.shape[1:])

  return jax.jit(decode, compiler_options=xla.run_once_options())


def _grid(hyper: Dict[str, Any]):
  """The grid's values as (P,) arrays (``"active"`` int32, the rest
  float32; None stays None) and P."""
  # On the host: eager device ops would each compile a program.
  h = {k: (None if v is None else np.atleast_1d(np.asarray(
      v, np.int32 if k == "active" else np.float32)))
       for k, v in hyper.items()}
  sizes = [v.shape[0] for v in h.values() if v is not None]
  for k, v in h.items():
    if v is not None and v.ndim != 1:
      raise ValueError(f"{k}: got shape {tuple(v.shape)}, expected a scalar "
                       "or one value per grid point")
  p = max(sizes, default=1)
  if any(n not in (1, p) for n in sizes):
    raise ValueError(f"hyper: got grids of lengths "
                     f"{ {k: int(v.shape[0]) for k, v in h.items() if v is not None} }"
                     ", expected one common length (or scalars)")
  return {k: (None if v is None else np.broadcast_to(v, (p,)))
          for k, v in h.items()}, p


def minimize(objective: Objective, y, data, *, hyper=None, steps: int = 1000,
             optimizer=None, config: Optional[SolverConfig] = None,
             points_per_call: Optional[int] = None,
             init_per_point: bool = False) -> RecoveryResult:
  """Minimises ``objective`` for every example of ``y`` (and every grid
  point of ``hyper``) in one compiled program.

  Args:
    objective: an ``Objective`` (``mapflow.objectives`` builds the paper's;
      any of the same shape works).
    y: measurements (B, ...).
    data: a dict pytree passed to the objective's functions.
    hyper: ``{name: value}`` merged into ``data`` for the loss, each a
      scalar or one value per grid point (P,); results get a leading P
      axis.  ``"active"`` masks an operator's rows (``data_operator``).
    steps: optimiser steps.
    optimizer: any optax optimiser (default Adam at
      ``DEFAULT_LEARNING_RATE``, 0.03).  Reuse one
      object across calls to reuse compiled code.
    config: a ``SolverConfig`` (starts, restarts, devices, ...).
    points_per_call: grid points per compiled call (None: all).
    init_per_point: ``config.init`` holds one start per grid point,
      (P, [R,] B, ...).

  Returns:
    A ``RecoveryResult`` with a leading grid axis P.
  """
  config = SolverConfig() if config is None else config
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps: got {steps!r}, expected an int >= 1")
  restarts = config.restarts
  if isinstance(restarts, bool) or not isinstance(restarts, int) or \
      restarts < 1:
    raise ValueError(f"restarts: got {restarts!r}, expected an int >= 1")
  optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(f"optimizer: got {type(optimizer).__name__}, expected "
                    "an optax.GradientTransformation (e.g. optax.adam(1e-2))")
  chunk = default_chunk() if config.chunk is None else int(config.chunk)
  if chunk < 1:
    raise ValueError(f"chunk: got {config.chunk!r}, expected an int >= 1")
  y = jnp.asarray(y)
  h, p = _grid(hyper or {})
  fns = compiled(objective, optimizer, chunk)
  per_point = bool(init_per_point)
  v0 = starts_lib.initial(objective, config, y, data, p, per_point)
  # Data parallel: examples split over the mesh (padded to a multiple of
  # its size with copies of the last one, dropped at the end).
  mesh = sharding.batch_mesh(config.devices)
  n_real = y.shape[0]
  y, n_pad = sharding.pad_along(y, mesh.size, 0)
  if isinstance(data, dict) and "operator" in data:
    data = {**data, "operator": ops_lib.pad_examples(data["operator"],
                                                     n_pad)}
  v0, _ = sharding.pad_along(v0, mesh.size, 2 if per_point else 1)
  y = sharding.shard_along(y, mesh, 0)
  data = sharding.replicate(data, mesh)
  per = p if points_per_call is None else max(1, min(p, points_per_call))
  decode = _decode(objective.to_image)
  parts = []
  for start in range(0, p, per):
    idx = np.minimum(np.arange(start, start + per), p - 1)
    hp = sharding.replicate(
        {k: None if v is None else v[idx] for k, v in h.items()}, mesh)
    # Shared starts are broadcast over the group's points inside init.
    v0_h = v0[idx] if per_point else v0
    part = _run_points(fns, decode, v0_h, None if per_point else len(idx),
                       y, hp, data, steps, chunk, config.progress, mesh)
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
  _warn_if_stalled(np.asarray(skipped), steps)
  return RecoveryResult(x, z, loss, jnp.asarray(trace), skipped)


def clear_caches():
  """Drops every compiled program the solvers hold (and JAX's own caches).

  Compiled programs are kept for reuse and never expire on their own; a
  process that compiles thousands of distinct ones (new shapes, new
  optimisers) should clear them now and then.  Measured here: the fuzz of
  ``tests/test_reliability.py`` crashed inside XLA:CPU's compiler (a
  segmentation fault) after about 2,400 calls of varied shapes in one
  process when nothing was cleared."""
  from mapflow import objectives
  from mapflow.solve import starts
  compiled.cache_clear()
  _to_image.cache_clear()
  _decode.cache_clear()
  starts._jitted.cache_clear()
  starts._normal.cache_clear()
  objectives._flow_maps.cache_clear()
  objectives._map_objective.cache_clear()
  objectives._asim_objective.cache_clear()
  objectives._bora_objective.cache_clear()
  jax.clear_caches()


class StalledWarning(UserWarning):
  """Every step of some problem was skipped: the result is its start."""


def _warn_if_stalled(skipped, steps):
  stuck = int(np.sum(skipped >= steps))
  if stuck:
    import warnings
    warnings.warn(
        f"{stuck} of {skipped.size} problems skipped every one of their "
        f"{steps} steps (a loss or gradient that was not finite, or whose "
        f"square overflows: |g| >= {GRAD_LIMIT:g}); their result is their "
        "start.  Rescale the problem (e.g. a larger noise std) or check the "
        "measurements; RecoveryResult.skipped counts such steps.",
        StalledWarning, stacklevel=3)


def _run_points(fns, decode, v0, points, y, h, data, steps, chunk, progress,
                mesh):
  """The step loop and finish for one group of grid points, from starts
  ``v0``: (R, B+pad, ...) shared by ``points`` grid points, or
  (P, R, B+pad, ...) where ``points`` is None.  Returns x, z, loss
  (P, B+pad, ...), the chosen restart's trace (P, steps, B+pad) as numpy,
  and the non-finite step count."""
  init_fn, step_fn, finish_fn, losses_fn = fns
  v0 = sharding.shard_along(v0, mesh, 1 if points is not None else 2)
  # A fresh copy (the step donates it), laid out like the step's output
  # state, so the step compiles only once.
  v, state = init_fn(v0, points, mesh=mesh)
  trace = []
  done = 0
  while done < steps:
    n = min(chunk, steps - done)
    v, state, vals = step_fn(v, state, np.int32(n), y, h, data,
                             mesh=mesh)[:3]
    trace.append(vals[:n])
    done += n
    if progress is not None:
      progress(done, vals[n - 1])
  # The trace is assembled on the host: eager XLA ops on a (steps, ...)
  # array would compile anew for every distinct step count.
  trace = np.concatenate([np.asarray(t) for t in trace])  # (steps, P, R, B)
  # The final iterate's losses.  Past the n-th step of a chunk the scan
  # only evaluated, so a short last chunk already holds them; with one step
  # per call, one more step (on copies: it donates its inputs) evaluates
  # them before its update, which is dropped.  Either way no loss-only
  # program is compiled (it took a quarter of recover's compile time).
  # With one step per call that step also gives the final iterate's
  # images, so no decoder is compiled, unless a final loss is not finite
  # (finish then goes back to an earlier iterate, whose images it lacks).
  x_final = None
  if n < chunk:
    final, at = vals, n
  elif chunk == 1:
    spare = jax.device_put((v, state), may_alias=False)
    _, _, final, x_final = step_fn(*spare, np.int32(1), y, h, data,
                                   mesh=mesh)
    at = 0
    if not np.all(np.isfinite(np.asarray(final))):
      x_final = None
  else:
    final, at = losses_fn(v, y, h, data), 0
  if x_final is None:
    best, v_best, loss, skipped = finish_fn(v, state, final, np.int32(at),
                                            mesh=mesh)
    x = decode(v_best, y, data)
  else:
    best, v_best, loss, skipped, x = finish_fn(v, state, final, np.int32(at),
                                               x_final, mesh=mesh)
  best_h = np.asarray(best)
  trace_best = np.take_along_axis(
      trace, np.broadcast_to(best_h[None, :, None], (trace.shape[0],) +
                             best_h.shape[:1] + (1,) + best_h.shape[1:]),
      axis=2)[:, :, 0]
  return x, v_best, loss, np.moveaxis(trace_best, 0, 1), skipped
