"""The paper's solvers as thin wrappers over one engine.

Each checks its inputs, builds an objective (``mapflow.objectives``) and
calls ``engine.minimize``.  The common arguments are their own keywords;
the rarer ones (starts, restarts, devices, ...) live in a
``SolverConfig``.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mapflow import objectives
from mapflow import operators as ops_lib
from mapflow.solve import engine, starts
from mapflow.solve.engine import RecoveryResult, SolverConfig, minimize


def _config(config, key=None) -> SolverConfig:
  if config is None:
    config = SolverConfig()
  if not isinstance(config, SolverConfig):
    raise TypeError(f"config: got {type(config).__name__}, expected a "
                    "mapflow.SolverConfig")
  if key is not None:
    key = starts.check_key(key, "key")
  elif config.key is not None:
    starts.check_key(config.key, "config.key")
  r = config.restarts
  if isinstance(r, bool) or not isinstance(r, int) or r < 1:
    raise ValueError(f"restarts: got {r!r}, expected an int >= 1")
  if r > 1 and isinstance(config.init, str) and config.init == "zeros":
    raise ValueError(f"restarts: got {r} with init 'zeros', where every "
                     "restart starts alike; expected init='random' (or "
                     "'measurements', whose later restarts are jittered)")
  return config if key is None else config._replace(key=key)


def _check_inputs(y, operator, noise, image_shape, hyper):
  y = starts.as_array(y, "y")
  if not jnp.issubdtype(y.dtype, jnp.floating):
    y = y.astype(jnp.float32)
  if y.ndim < 2:
    raise ValueError(f"y: got shape {tuple(y.shape)}, expected a batch of "
                     "measurements (B, ...)")
  if y.shape[0] == 0:
    raise ValueError(f"y: got an empty batch, shape {tuple(y.shape)}; "
                     "expected at least one example")
  starts.check_finite(y, "y", "finite measurements")
  if hasattr(operator, "check_input"):
    operator.check_input(tuple(image_shape))
  try:
    want = jax.eval_shape(operator, jax.ShapeDtypeStruct(
        (y.shape[0],) + tuple(image_shape), jnp.float32)).shape
  except (TypeError, ValueError) as e:
    raise ValueError(f"operator: cannot be applied to images of shape "
                     f"{tuple(image_shape)} ({type(operator).__name__}: "
                     f"{str(e).splitlines()[0]})") from None
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
      try:
        if isinstance(hyper[name], (str, bytes)) or np.asarray(
            hyper[name]).dtype.kind not in "biuf":
          raise TypeError
        v = np.asarray(hyper[name], np.float64)
      except (TypeError, ValueError):
        raise ValueError(f"{name}: got {hyper[name]!r}, expected finite "
                         "numbers >= 0") from None
      if np.any(v < 0) or not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: got {v.tolist()}, expected finite values "
                         ">= 0")
  if hyper.get("active") is not None:
    m = ops_lib.max_rows(operator)
    a = np.asarray(hyper["active"])
    if m is None:
      raise ValueError("ms: the operator has no Gaussian matrix whose rows "
                       "could be masked")
    if np.any(a != np.round(a)) or np.any(a > m) or np.any(a < 0):
      raise ValueError(f"ms: got {a.tolist()}, expected integers 0 <= m <= "
                       f"{m} (the operator's rows)")
  return y


def _param_shapes(prior):
  from mapflow import checkpoint
  from mapflow.flows import presets
  if isinstance(prior.config, (presets.RealNVPConfig, presets.GlowConfig)):
    # The config's shapes, as loading the model already traced them.
    return checkpoint.abstract_params(prior.config)
  return _traced_param_shapes(prior)


@functools.lru_cache(maxsize=32)
def _traced_param_shapes(prior):
  x = jax.ShapeDtypeStruct((1,) + tuple(prior.config.image_shape),
                           jnp.float32)
  return jax.eval_shape(prior.init, jax.random.PRNGKey(0), x)


def _check_params(prior, params):
  """Raises ValueError naming the first leaf of ``params`` that does not
  fit ``prior``'s config (params made for another config)."""
  try:
    want = _param_shapes(prior)
  except Exception:  # a prior without a config-driven init: nothing to check
    return
  w, w_def = jax.tree_util.tree_flatten_with_path(want)
  h, h_def = jax.tree_util.tree_flatten_with_path(params)
  name = type(prior.config).__name__
  if w_def != h_def:
    raise ValueError(
        f"params: got a pytree of {len(h)} leaves that does not match the "
        f"{len(w)} leaves of this prior ({name}); were they made for "
        "another config?")
  for (path, a), (_, b) in zip(w, h):
    if tuple(a.shape) != tuple(jnp.shape(b)):
      raise ValueError(
          f"params: leaf {jax.tree_util.keystr(path)} has shape "
          f"{tuple(jnp.shape(b))}, expected {tuple(a.shape)} for this "
          f"prior ({name})")


def _check_noise_parametrization(operator, noise):
  if not hasattr(operator, "inverse"):
    raise ValueError(
        f"operator: parametrization 'noise' needs an invertible operator "
        f"(with inverse(y): identity, scale); got {type(operator).__name__}")
  if not hasattr(noise, "latent_to_noise"):
    raise ValueError(
        f"noise: parametrization 'noise' needs flow noise "
        f"(mapflow.noise.from_flow); got {type(noise).__name__}")


def _squeeze_p(res: RecoveryResult) -> RecoveryResult:
  return RecoveryResult(*(a[0] for a in res))


def recover(y, *, prior, params, operator, noise, beta=1.0, steps=1000,
            optimizer=None, key=None,
            config: Optional[SolverConfig] = None) -> RecoveryResult:
  """MAP recovery (paper eq. 12) of a batch from measurements ``y``.

  Args:
    y: measurements (B, *measurement shape).
    prior: a ``Flow``; params: its params.
    operator: a forward operator from ``mapflow.operators``.
    noise: a noise distribution (``mapflow.noise`` or any distrax one).
    beta: the smoothing parameter β >= 0.
    steps: optimiser steps.
    optimizer: any optax optimiser (default Adam, lr 0.03; ``optax.lbfgs()``
      works; clip with ``optax.chain(optax.clip_by_global_norm(c), ...)``).
      Reuse one object across calls to reuse compiled code.
    key: PRNG key of random starts (overrides ``config.key``).
    config: a ``SolverConfig``: the start (``init``), ``restarts``, what
      moves (``parametrization``: "z", the image latent as the paper does;
      "x", the image; "noise", the latent of ``mapflow.noise.from_flow``
      noise with an invertible operator), devices, progress.

  Returns:
    A ``RecoveryResult``.
  """
  cfg = _config(config, key)
  obj = objectives.map_objective(prior, cfg.parametrization)
  _check_params(prior, params)
  y = _check_inputs(y, operator, noise, obj.image_shape, {"beta": beta})
  if cfg.parametrization == "noise":
    _check_noise_parametrization(operator, noise)
  return _squeeze_p(minimize(
      obj, y, {"params": params, "operator": operator, "noise": noise},
      hyper={"beta": beta}, steps=steps, optimizer=optimizer, config=cfg))


def recover_asim(y, *, prior, params, operator, gamma=0.1, steps=1000,
                 optimizer=None, key=None,
                 config: Optional[SolverConfig] = None) -> RecoveryResult:
  """Asim et al.'s proxy loss (eq. 9) through the same engine;
  ``config.parametrization`` is "z" (the latent, as Asim et al. do) or "x"
  (the image: the same loss at ``z = G⁻¹(x)``)."""
  cfg = _config(config, key)
  obj = objectives.asim_objective(prior, cfg.parametrization)
  _check_params(prior, params)
  y = _check_inputs(y, operator, None, obj.image_shape, {"gamma": gamma})
  return _squeeze_p(minimize(
      obj, y, {"params": params, "operator": operator},
      hyper={"gamma": gamma}, steps=steps, optimizer=optimizer, config=cfg))


def recover_bora(y, *, generator, operator, latent_shape, lam=0.1,
                 steps=1000, optimizer=None, key=None,
                 config: Optional[SolverConfig] = None,
                 generator_params=None) -> RecoveryResult:
  """Bora et al.'s loss (eq. 4) for any generator.

  ``generator`` maps one latent of ``latent_shape`` (e.g. (20,) for the
  VAE) to one image: ``generator(z)``, or ``generator(generator_params, z)``
  when ``generator_params`` is given (e.g. ``mapflow.vae.decoder`` and the
  VAE's params, which then stay arguments of the compiled program).  Reuse
  one generator object across calls to reuse compiled code.  The default
  start is random (``config.init="random"``, std 1, as Bora et al.).
  """
  cfg = SolverConfig(init="random", init_std=1.0) if config is None else \
      config
  cfg = _config(cfg, key)
  if cfg.parametrization != "z":
    raise ValueError(f"parametrization: got {cfg.parametrization!r}; Bora "
                     "et al. moves the generator's latent only ('z')")
  latent_shape = tuple(latent_shape)
  with_params = generator_params is not None
  one = ((lambda z: generator(generator_params, z)) if with_params
         else generator)
  img = tuple(jax.eval_shape(
      one, jax.ShapeDtypeStruct(latent_shape, jnp.float32)).shape)
  y = _check_inputs(y, operator, None, img, {"lam": lam})
  obj = objectives.bora_objective(generator, latent_shape, img, with_params)
  return _squeeze_p(minimize(
      obj, y, {"params": generator_params, "operator": operator},
      hyper={"lam": lam}, steps=steps, optimizer=optimizer, config=cfg))


def sweep(y, *, prior, params, operator, noise, betas, ms=None, steps=1000,
          optimizer=None, config: Optional[SolverConfig] = None
          ) -> RecoveryResult:
  """A β x m grid of MAP recoveries in one compiled program.

  ``ms`` (optional) are measurement counts: the operator's Gaussian matrix
  must have ``max(ms)`` rows or more, and ``y`` is its full output; rows at
  or beyond each ``m`` are masked.  Results are indexed ``[β, m, example]``
  (``[β, 0, example]`` without ``ms``) and equal separate ``recover`` calls
  with ``operators.with_active(operator, m)``.

  ``config.max_batch`` bounds grid points x restarts x examples per call
  (default: ``engine.default_max_batch()``, 256 on CPU): the grid then
  runs in the fewest equal groups of points, one after another, through
  the same compiled program (the last group is padded with copies of the
  last point, which are dropped); the starts are computed once.
  ``config.progress`` is called per step of each group.

  ``config.init`` takes what ``recover`` takes, shared by every grid point,
  or one start per point: an array of shape (len(betas), len(ms) or 1,
  [restarts,] B, ...), such as the ``z`` of an earlier sweep over the same
  grid, which continues each point from its own earlier solution.
  """
  cfg = _config(config)
  obj = objectives.map_objective(prior, cfg.parametrization)
  _check_params(prior, params)
  mb = cfg.max_batch
  if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int)
                         or mb < 1):
    raise ValueError(f"max_batch: got {mb!r}, expected None or an int >= 1")
  if mb is None:
    mb = engine.default_max_batch()
  try:
    betas = np.atleast_1d(np.asarray(betas, np.float64))
  except (TypeError, ValueError):
    raise ValueError(f"betas: got {betas!r}, expected finite numbers "
                     ">= 0") from None
  if betas.ndim != 1 or betas.size == 0:
    raise ValueError(f"betas: got shape {betas.shape}, expected a 1-D list "
                     "of one or more values")
  hyper = {"beta": betas}
  if ms is None:
    grid = {"beta": jnp.asarray(betas, jnp.float32), "active": None}
    nm = 1
  else:
    ms_f = np.atleast_1d(np.asarray(ms, np.float64))
    hyper["active"] = ms_f
    nm = ms_f.shape[0]
    grid = {"beta": jnp.repeat(jnp.asarray(betas, jnp.float32), nm),
            "active": jnp.tile(jnp.asarray(ms_f, jnp.int32), betas.shape[0])}
  y = _check_inputs(y, operator, noise, obj.image_shape, hyper)
  if cfg.parametrization == "noise":
    _check_noise_parametrization(operator, noise)
  nb = betas.shape[0]
  n_points = nb * nm
  per_call = None
  if mb is not None:
    per_call = max(1, mb // (cfg.restarts * y.shape[0]))
    per_call = -(-n_points // -(-n_points // per_call))  # balanced groups
  var_rank = len(y.shape[1:]) if obj.variable == "measurement" else len(
      obj.variable)
  init = cfg.init
  if not isinstance(init, str):
    init = starts.as_array(init, "init")
  per_point = (not isinstance(init, str)
               and init.ndim in (var_rank + 3, var_rank + 4))
  if per_point:
    if init.shape[:2] != (nb, nm):
      raise ValueError(f"init: got per-point starts of shape {init.shape},"
                       f" expected ({nb}, {nm}, [restarts,] B, ...) for "
                       "this grid")
    cfg = cfg._replace(init=init.reshape((n_points,) + init.shape[2:]))
  res = minimize(obj, y, {"params": params, "operator": operator,
                          "noise": noise},
                 hyper=grid, steps=steps, optimizer=optimizer, config=cfg,
                 points_per_call=per_call, init_per_point=per_point)
  return RecoveryResult(*(a.reshape((nb, nm) + a.shape[1:]) for a in res))
