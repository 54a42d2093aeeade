"""Where a solve starts: the objective's variable for every restart.

* "zeros": flow latents z = 0, mapped to the variable (``from_latent``;
  for the image itself that is G(0)).
* "random": z ~ N(0, init_std²) per restart, mapped the same way.
* "measurements": the clipped back-projection of y (``measurement_init``),
  mapped by ``from_image``; restarts after the first jittered by
  ``init_std`` in the variable's space.
* an array: the variable itself, (B, ...) shared by the restarts or
  (R, B, ...); in a sweep also one start per grid point, (P, [R,] B, ...).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mapflow import operators as ops_lib
from mapflow import xla


def variable_shape(objective, y) -> tuple:
  """One example's variable shape."""
  if objective.variable == "measurement":
    return tuple(jnp.shape(y)[1:])
  return tuple(objective.variable)


def as_array(value, name: str, dtype=None):
  """``jnp.asarray(value, dtype)``, or a ValueError naming the argument
  when ``value`` is not one array: a tuple such as a flow's ``(z,
  log_det)``, arrays of different shapes, a string."""
  if isinstance(value, (str, bytes, dict)):
    raise ValueError(f"{name}: got a {type(value).__name__}, expected an "
                     "array")
  try:
    return jnp.asarray(value, dtype)
  except (TypeError, ValueError) as e:
    if isinstance(value, (tuple, list)):
      shapes = []
      for v in value:
        try:
          shapes.append(tuple(np.shape(v)))
        except ValueError:
          shapes.append("?")
      got = (f"a {type(value).__name__} of {len(value)} items of shapes "
             f"{shapes}")
    else:
      got = f"a {type(value).__name__}"
    raise ValueError(f"{name}: got {got}, expected one array ("
                     f"{str(e).splitlines()[0]})") from None


def check_finite(value, name: str, expected: str):
  """A ValueError naming the argument if ``value`` has non-finite entries
  (counted on the host: an eager device check would compile programs)."""
  bad = int(np.sum(~np.isfinite(np.asarray(value))))
  if bad:
    raise ValueError(f"{name}: got non-finite values ({bad} entries), "
                     f"expected {expected}")


def is_real_number(v) -> bool:
  """Whether ``v`` is one real number (Python, NumPy or a 0-d JAX array;
  not a bool, not traced)."""
  if isinstance(v, (bool, np.bool_)) or isinstance(v, jax.core.Tracer):
    return False
  if isinstance(v, (int, float, np.integer, np.floating)):
    return True
  dtype = getattr(v, "dtype", None)
  return dtype is not None and np.ndim(v) == 0 and np.dtype(dtype).kind in "iuf"


def check_key(key, name: str = "key"):
  """``key`` if it is a JAX PRNG key (typed, or raw uint32 key data),
  else a ValueError naming the argument."""
  dtype = getattr(key, "dtype", None)
  if dtype is not None and (
      jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or
      (dtype == jnp.uint32 and jnp.ndim(key) == 1)):
    return key
  shown = repr(key)
  shown = shown if len(shown) <= 60 else shown[:57] + "..."
  raise ValueError(f"{name}: got {shown}, expected a JAX PRNG key "
                   "(jax.random.key(0) or jax.random.PRNGKey(0))")


@functools.lru_cache(maxsize=64)
def _jitted(fn):
  # Run eagerly, a flow is hundreds of separately dispatched (and
  # separately compiled) ops.
  return jax.jit(fn, compiler_options=xla.step_options())


@functools.lru_cache(maxsize=1)
def _normal():
  # At XLA's default level: -O0 moves the draws by ~5e-7, and with them
  # every start (see ``xla.run_once_options``).
  return jax.jit(jax.random.normal, static_argnums=1)


def measurement_init(y, operator, image_shape, lo=0.02, hi=0.98):
  """An image estimate from the measurements (back-projection), clipped."""
  if not hasattr(operator, "back_project"):
    raise ValueError(f"init: 'measurements' needs an operator with "
                     f"back_project; {type(operator).__name__} has none")
  bp = operator.back_project(y).reshape((y.shape[0],) + tuple(image_shape))
  one_bit = ops_lib.innermost(operator)
  if isinstance(one_bit, ops_lib.OneBit):
    # sign measurements carry direction only: centre and set a spread.
    bp = bp - jnp.mean(bp, axis=(1, 2, 3), keepdims=True)
    bp = one_bit.center + 0.25 * bp / (
        jnp.std(bp, axis=(1, 2, 3), keepdims=True) + 1e-8)
  return jnp.clip(bp, lo, hi)


def initial(objective, config, y, data, points: int = 1,
            per_point: bool = False):
  """The starts: (R, B, ...) shared by every grid point, or with
  ``per_point`` (P, R, B, ...) from ``config.init`` of shape
  (P, [R,] B, ...)."""
  init, restarts = config.init, config.restarts
  shape = (restarts, y.shape[0]) + variable_shape(objective, y)
  lo, hi = (float(v) for v in config.init_range)
  if not lo < hi:
    raise ValueError(f"init_range: got {config.init_range!r}, expected "
                     "(lo, hi) with lo < hi")
  key = jax.random.PRNGKey(0) if config.key is None else config.key
  std = float(config.init_std)
  if not (np.isfinite(std) and std >= 0):
    raise ValueError(f"init_std: got {config.init_std!r}, expected a "
                     "finite std >= 0")
  if isinstance(init, str):
    # Drawn only where used: "zeros" needs no draws (nor their compile).
    draws = lambda: std * _normal()(key, shape)
    to_var = (None if objective.from_latent is None
              else _jitted(objective.from_latent))
    if init in ("zeros", "random"):
      # Zeros from the host compile nothing.
      z = jnp.asarray(np.zeros(shape, np.float32)) if init == "zeros" \
          else draws()
      if to_var is None:
        return z
      if init == "zeros":
        v = to_var(z[0], y, data)
        return jnp.broadcast_to(v, (restarts,) + v.shape)
      return jnp.stack([to_var(zi, y, data) for zi in z])
    if init == "measurements":
      if objective.from_image is None:
        raise ValueError("init: 'measurements' needs an objective with "
                         "from_image")
      x0 = measurement_init(y, data["operator"], objective.image_shape,
                            lo, hi)
      v0 = _jitted(objective.from_image)(x0, y, data)
      # Restart 0 starts at the estimate; the others nearby.
      return v0[None] + draws().at[0].set(0.0)
    raise ValueError(f"init: got {init!r}, expected 'zeros', 'random', "
                     "'measurements' or an array")
  arr = as_array(init, "init", jnp.float32)
  if not bool(jnp.all(jnp.isfinite(arr))):
    raise ValueError(f"init: got {int(jnp.sum(~jnp.isfinite(arr)))} "
                     "non-finite entries, expected a finite start")
  if per_point:
    # One start per grid point: (P, B, ...) or (P, R, B, ...).
    if arr.ndim == len(shape):
      arr = jnp.broadcast_to(arr[:, None], (points, restarts) + arr.shape[1:])
    if arr.shape != (points,) + shape:
      raise ValueError(f"init: got per-point starts of shape {arr.shape}, "
                       f"expected {(points,) + shape}")
    return arr
  if arr.shape == shape[1:]:
    arr = jnp.broadcast_to(arr, shape)
  if arr.shape != shape:
    raise ValueError(f"init: got an array of shape {arr.shape}, expected "
                     f"{shape[1:]} or {shape}")
  return arr
