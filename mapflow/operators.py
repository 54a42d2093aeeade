"""Forward operators ``f``: pytrees callable on a batch ``x`` (B, H, W, C).

Every operator maps a batch to a batch of measurements and exposes
``measurement_mask()``: None, or an array of 0/1 over the measurement's
event shape saying which entries count.  Masked entries are zero in the
output and count nowhere (not in the noise density, not in any loss).
Invertible operators (``identity``, ``scale``) also have ``inverse(y)``,
which the noise-latent parametrisation of ``mapflow.recover`` needs.

``gaussian(..., active=k)`` keeps the first ``k`` of its ``m`` rows; ``k``
may be traced, so the number of measurements can be vmapped over.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


def _ste_identity_fwd(u):
  return jnp.sign(u), None


@jax.custom_vjp
def sign_ste(u):
  """``sign(u)`` with the straight-through gradient ``d/du := 1``.

  Forward: exactly -1, 0 or +1 (0 only at u = 0).  Backward: the incoming
  cotangent passes through unchanged (Bengio et al., 2013).
  """
  return jnp.sign(u)


sign_ste.defvjp(_ste_identity_fwd, lambda _, g: (g,))


@jax.custom_vjp
def sign_ste_clipped(u):
  """``sign(u)`` with gradient ``1{|u| <= 1}`` (the "hard tanh" estimator)."""
  return jnp.sign(u)


sign_ste_clipped.defvjp(lambda u: (jnp.sign(u), u),
                        lambda u, g: (g * (jnp.abs(u) <= 1.0),))


class Operator:
  """Mixin: the default ``measurement_mask`` (everything counts)."""

  def measurement_mask(self):
    return None

  def check_input(self, image_shape):
    """Raises ValueError if the operator was built for other images."""

  def output_event_shape(self, image_shape):
    return jax.eval_shape(self, jax.ShapeDtypeStruct((1,) + tuple(image_shape),
                                                     jnp.float32)).shape[1:]


@flax.struct.dataclass
class Scale(Operator):
  """``f(x) = c x``."""

  c: Any

  def __call__(self, x):
    return self.c * x

  def back_project(self, y):
    return y / self.c

  def inverse(self, y):
    """``x = y / c`` (exact: ``f`` is invertible for ``c != 0``)."""
    return y / self.c


@flax.struct.dataclass
class Identity(Operator):
  """``f(x) = x``."""

  def __call__(self, x):
    return x

  def back_project(self, y):
    return y

  def inverse(self, y):
    return y


@flax.struct.dataclass
class GaussianMatrix(Operator):
  """``f(x) = A vec(x)`` with rows at or beyond ``active`` masked to zero."""

  matrix: jax.Array          # (m, d)
  active: Any = None         # int or traced scalar; None = all m rows

  def row_mask(self):
    m = self.matrix.shape[0]
    if self.active is None:
      return jnp.ones((m,), self.matrix.dtype)
    return (jnp.arange(m) < self.active).astype(self.matrix.dtype)

  def measurement_mask(self):
    return None if self.active is None else self.row_mask()

  def __call__(self, x):
    flat = x.reshape(x.shape[:-3] + (-1,))
    y = flat @ self.matrix.T
    return y * self.row_mask() if self.active is not None else y

  def back_project(self, y):
    return y @ self.matrix

  def check_input(self, image_shape):
    d = math.prod(image_shape)
    if self.matrix.shape[1] != d:
      raise ValueError(f"operator: a Gaussian matrix for signals of "
                       f"dimension {self.matrix.shape[1]}, applied to images "
                       f"of shape {tuple(image_shape)} (dimension {d})")


@flax.struct.dataclass
class OneBit(Operator):
  """``f(x) = sign(op(x - center))``, straight-through gradient.

  ``ste`` is "identity" (gradient 1) or "clipped" (gradient 1{|u| <= 1}).
  Masked rows of ``op`` give sign(0) = 0.
  """

  op: Any
  center: Any = 0.0
  ste: str = flax.struct.field(pytree_node=False, default="identity")

  def __call__(self, x):
    u = self.op(x - self.center)
    return sign_ste(u) if self.ste == "identity" else sign_ste_clipped(u)

  def measurement_mask(self):
    return self.op.measurement_mask()

  def back_project(self, y):
    return self.op.back_project(y)

  def check_input(self, image_shape):
    self.op.check_input(image_shape)

  def output_event_shape(self, image_shape):
    return self.op.output_event_shape(image_shape)


@flax.struct.dataclass
class Mask(Operator):
  """``f(x) = M * x`` with a fixed binary mask ``M`` of the image's shape."""

  mask: jax.Array

  def __call__(self, x):
    if tuple(x.shape[-self.mask.ndim:]) != tuple(self.mask.shape) or \
        x.ndim < self.mask.ndim:
      # It would broadcast into images of another shape.
      raise ValueError(f"x: got shape {tuple(x.shape)}, expected a batch of "
                       f"images of the mask's shape {tuple(self.mask.shape)}")
    return self.mask * x

  def back_project(self, y):
    return y + 0.5 * (1.0 - self.mask)

  def check_input(self, image_shape):
    if tuple(self.mask.shape) != tuple(image_shape):
      raise ValueError(f"operator: a mask of shape {tuple(self.mask.shape)}, "
                       f"applied to images of shape {tuple(image_shape)}")


@flax.struct.dataclass
class Compose(Operator):
  """``f(x) = outer(inner(x))``."""

  outer: Any
  inner: Any

  def __call__(self, x):
    return self.outer(self.inner(x))

  def measurement_mask(self):
    """The outer operator's mask, times the inner one's where the outer
    maps entry to entry (its output entry j reads only input entry j).
    Otherwise the inner mask lies over an intermediate whose entries the
    outer mixes: every output entry is then a real measurement."""
    m = self.outer.measurement_mask()
    if not is_entrywise(self.outer):
      return m
    m_in = self.inner.measurement_mask()
    if m_in is None or m is None:
      return m_in if m is None else m
    return m * m_in

  def check_input(self, image_shape):
    self.inner.check_input(image_shape)
    if hasattr(self.outer, "check_input"):
      self.outer.check_input(self.inner.output_event_shape(image_shape))

  def output_event_shape(self, image_shape):
    return self.outer.output_event_shape(
        self.inner.output_event_shape(image_shape))


@flax.struct.dataclass
class Masked(Operator):
  """``op`` with some measurement entries left out: ``keep`` (0/1 over the
  measurement's event shape) is 0 where an entry counts nowhere (a
  hold-out).  ``back_project`` fills left-out entries with the mean of the
  kept ones first, so a start never sees them."""

  op: Any
  keep: jax.Array

  def __call__(self, x):
    return self.op(x) * self.keep

  def measurement_mask(self):
    inner = self.op.measurement_mask()
    return self.keep if inner is None else inner * self.keep

  def back_project(self, y):
    if y.ndim != 4:
      # Rows of a matrix: a left-out row is simply not used.
      return self.op.back_project(y * self.keep)
    # Pixels: a left-out pixel takes the mean of the kept ones in its 5x5
    # neighbourhood (or of all kept ones, if none is near), so the start
    # neither sees it nor leaves a hole an optimiser must slowly fill.
    keep = jnp.broadcast_to(self.keep, y.shape[1:])[None]
    box = lambda a: jax.lax.reduce_window(
        a, 0.0, jax.lax.add, (1, 5, 5, 1), (1, 1, 1, 1), "SAME")
    near_sum, near_n = box(y * keep), box(jnp.broadcast_to(keep, y.shape))
    axes = (1, 2, 3)
    far = jnp.sum(y * keep, axis=axes, keepdims=True) / jnp.maximum(
        jnp.sum(jnp.broadcast_to(keep, y.shape), axis=axes, keepdims=True),
        1.0)
    fill = jnp.where(near_n > 0, near_sum / jnp.maximum(near_n, 1.0), far)
    return self.op.back_project(y * keep + (1.0 - keep) * fill)

  def output_event_shape(self, image_shape):
    return self.op.output_event_shape(image_shape)

  def check_input(self, image_shape):
    self.op.check_input(image_shape)
    event = tuple(self.op.output_event_shape(image_shape))
    if tuple(self.keep.shape) != event:
      # A keep of another shape would broadcast over the batch.
      raise ValueError(f"keep: got shape {tuple(self.keep.shape)}, expected "
                       f"the measurement's shape {event}")


def masked(op, keep) -> Masked:
  """``op`` counting only the measurement entries where ``keep`` is 1."""
  keep = jnp.asarray(keep, jnp.float32)
  if not isinstance(keep, jax.core.Tracer) and not bool(
      jnp.all((keep == 0) | (keep == 1))):
    raise ValueError("keep: got values other than 0 and 1, expected a 0/1 "
                     "map over the measurement (0: left out)")
  return Masked(op, keep)


@flax.struct.dataclass
class Batched(Operator):
  """One operator per example: ``f(x)[i] = ops[i](x[i])``.

  ``ops`` is an operator whose array leaves carry a leading example axis
  (``batched`` stacks a list).  A batch of ``k`` times as many images (the
  solver's restarts, flattened in front of the examples) is matched to the
  examples in order, ``x[j]`` to ``ops[j % B]``.  Optimisers that evaluate
  one example alone (line searches such as L-BFGS) cannot use it.
  """

  ops: Any

  def _size(self):
    return jax.tree_util.tree_leaves(self.ops)[0].shape[0]

  def _map(self, fn, a):
    b = self._size()
    reps = a.shape[0] // b
    if reps * b != a.shape[0]:
      raise ValueError(f"x: got a batch of {a.shape[0]}, expected a "
                       f"multiple of the {b} per-example operators")
    ops = jax.tree_util.tree_map(
        lambda leaf: jnp.tile(leaf, (reps,) + (1,) * (leaf.ndim - 1)),
        self.ops)
    return jax.vmap(lambda o, ai: fn(o, ai[None])[0])(ops, a)

  def __call__(self, x):
    return self._map(lambda o, xi: o(xi), x)

  def output_event_shape(self, image_shape):
    return jax.eval_shape(self, jax.ShapeDtypeStruct(
        (self._size(),) + tuple(image_shape), jnp.float32)).shape[1:]

  def back_project(self, y):
    return self._map(lambda o, yi: o.back_project(yi), y)

  def measurement_mask(self):
    if self.ops.measurement_mask() is not None:
      raise ValueError("operator: per-example operators with masked rows "
                       "(active) are not supported")
    return None

  def check_input(self, image_shape):
    first = jax.tree_util.tree_map(lambda leaf: leaf[0], self.ops)
    first.check_input(image_shape)


def batched(ops) -> Batched:
  """One operator per example from a list of operators of one kind and
  shape (e.g. a mask per image): ``f(x)[i] = ops[i](x[i])``."""
  ops = list(ops)
  if not ops:
    raise ValueError("ops: got an empty list, expected one operator per "
                     "example")
  kinds = {type(o) for o in ops}
  if not all(isinstance(o, Operator) for o in ops):
    raise ValueError(f"ops: got {sorted(k.__name__ for k in kinds)}, "
                     "expected mapflow operators")
  if not jax.tree_util.tree_leaves(ops[0]):
    raise ValueError(f"ops: got {type(ops[0]).__name__} operators, which "
                     "hold no arrays to differ per example; expected one "
                     "operator for every example")
  if len(kinds) != 1 or isinstance(ops[0], Batched):
    raise ValueError(f"ops: got operators of kinds {sorted(k.__name__ for k in kinds)}, "
                     "expected one kind (not themselves batched)")
  try:
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ops)
  except (ValueError, TypeError) as e:
    raise ValueError(f"ops: operators of different shapes ({e})") from None
  return Batched(stacked)


def scale(c: float) -> Scale:
  """``f(x) = c x``, c a nonzero finite number (its inverse divides)."""
  if not isinstance(c, jax.core.Tracer):
    try:
      ok = bool(np.all(np.isfinite(np.float32(c)) & (np.float32(c) != 0)))
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise ValueError(f"c: got {c!r}, expected a nonzero finite number")
  return Scale(jnp.asarray(c, jnp.float32))


def identity() -> Identity:
  return Identity()


def gaussian(key, m: int, d, active=None) -> GaussianMatrix:
  """A Gaussian measurement matrix, ``A_ij ~ N(0, 1/m)``.

  Args:
    key: PRNG key.
    m: rows (the most measurements any sweep will use).
    d: the signal's dimension, or its image shape (H, W, C).
    active: keep rows ``< active`` (may be traced); None keeps all.
  """
  d_in = d
  d = math.prod(d) if isinstance(d, (tuple, list)) else d
  if isinstance(d, np.integer):
    d = int(d)
  if isinstance(d, bool) or not isinstance(d, (int,)) or d < 1:
    raise ValueError(f"d: got {d_in!r}, expected a positive int or an image "
                     "shape of positive ints")
  if isinstance(m, bool) or not isinstance(m, int) or m < 1:
    raise ValueError(f"m: got {m!r}, expected a positive int")
  if active is not None and not isinstance(active, jax.core.Tracer):
    whole = not isinstance(active, (bool, np.bool_)) and np.ndim(
        active) == 0 and np.issubdtype(np.asarray(active).dtype, np.integer)
    if not whole or not 0 <= int(active) <= m:
      raise ValueError(f"active: got {active!r}, expected an int with "
                       f"0 <= active <= m (m={m})")
  a = jax.random.normal(key, (m, d)) / math.sqrt(m)
  act = None if active is None else jnp.asarray(active, jnp.int32)
  return GaussianMatrix(a, act)


def one_bit(op, center: float = 0.0, ste: str = "identity") -> OneBit:
  """``sign(op(x - center))``.  Centre at 0.5 for images in [0, 1] (the
  experiments do): uncentred, ``sign(A x)`` cannot see x's brightness."""
  if ste not in ("identity", "clipped"):
    raise ValueError(f"ste: got {ste!r}, expected 'identity' or 'clipped'")
  if not callable(op):
    raise ValueError(f"op: got {type(op).__name__}, expected a linear "
                     "operator (mapflow.operators)")
  if not isinstance(center, jax.core.Tracer) and (
      np.ndim(center) != 0 or not np.isfinite(float(center))):
    raise ValueError(f"center: got {center!r}, expected one finite number "
                     "(0.5 for images in [0, 1])")
  if is_one_bit(op):
    raise ValueError("op: got a one_bit operator; sign(sign(.)) carries no "
                     "more than one sign, expected a linear operator")
  return OneBit(op, jnp.asarray(center, jnp.float32), ste)


def mask(key, shape, keep: float = 0.75) -> Mask:
  """A Bernoulli(``keep``) sub-pixel mask of the image's ``shape``."""
  if not (isinstance(keep, (int, float)) and 0.0 < keep <= 1.0):
    raise ValueError(f"keep: got {keep!r}, expected 0 < keep <= 1")
  return Mask(jax.random.bernoulli(key, keep, tuple(shape)).astype(
      jnp.float32))


def compose(outer, inner) -> Compose:
  """``f(x) = outer(inner(x))``."""
  for name, op in (("outer", outer), ("inner", inner)):
    if not callable(op):
      raise ValueError(f"{name}: got {type(op).__name__}, expected an "
                       "operator (mapflow.operators)")
  return Compose(outer, inner)


def with_active(op, active):
  """``op`` with every Gaussian matrix inside it keeping ``active`` rows
  (``active`` may be traced; a concrete one must be in 0..m)."""
  if not isinstance(active, jax.core.Tracer):
    m = max_rows(op)
    a = jnp.asarray(active)
    if a.ndim != 0 or not jnp.issubdtype(a.dtype, jnp.integer) and not (
        jnp.issubdtype(a.dtype, jnp.floating) and float(a) == int(a)):
      raise ValueError(f"active: got {active!r}, expected an integer row "
                       "count")
    if m is not None and not 0 <= int(a) <= m:
      raise ValueError(f"active: got {int(a)}, expected 0 <= active <= "
                       f"m = {m}")
  if isinstance(op, GaussianMatrix):
    return op.replace(active=jnp.asarray(active, jnp.int32))
  if isinstance(op, (OneBit, Masked)):
    return op.replace(op=with_active(op.op, active))
  if isinstance(op, Compose):
    return op.replace(outer=with_active(op.outer, active),
                      inner=with_active(op.inner, active))
  if isinstance(op, Batched) and max_rows(op.ops) is not None:
    # Its matrices are stacked per example; rows left active silently.
    raise ValueError("op: got per-example operators (batched), whose rows "
                     "cannot be masked (active); expected one operator for "
                     "every example")
  return op


def pad_examples(op, n: int):
  """``op`` for a batch padded with ``n`` copies of its last example (the
  solvers pad to a multiple of the device count): a per-example operator
  repeats its last example's operator; any other is unchanged."""
  if n == 0:
    return op
  if isinstance(op, Batched):
    return op.replace(ops=jax.tree_util.tree_map(
        lambda leaf: jnp.concatenate([leaf, jnp.repeat(leaf[-1:], n, 0)]),
        op.ops))
  if isinstance(op, Masked):
    return op.replace(op=pad_examples(op.op, n))
  return op


def innermost(op):
  """``op`` without its ``Masked``/``Batched`` wrappers (a batched one's
  first example)."""
  while isinstance(op, (Masked, Batched)):
    op = (op.op if isinstance(op, Masked) else
          jax.tree_util.tree_map(lambda leaf: leaf[0], op.ops))
  return op


def is_entrywise(op) -> bool:
  """Whether ``op``'s output entry j depends on input entry j alone (the
  output has the input's shape): identity, scale, pixel masks, the sign
  of one of these, one of these per example, and their compositions."""
  if isinstance(op, (Identity, Scale, Mask)):
    return True
  if isinstance(op, (Masked, OneBit)):
    return is_entrywise(op.op)
  if isinstance(op, Batched):
    return is_entrywise(innermost(op))
  if isinstance(op, Compose):
    return is_entrywise(op.outer) and is_entrywise(op.inner)
  return False


def is_one_bit(op) -> bool:
  """Whether a sign is applied anywhere in ``op``."""
  op = innermost(op)
  if isinstance(op, OneBit):
    return True
  return isinstance(op, Compose) and (is_one_bit(op.outer) or
                                      is_one_bit(op.inner))


def max_rows(op) -> Optional[int]:
  """``m`` of the Gaussian matrix inside ``op``, if there is one."""
  if isinstance(op, GaussianMatrix):
    return op.matrix.shape[0]
  if isinstance(op, (OneBit, Masked)):
    return max_rows(op.op)
  if isinstance(op, Compose):
    return max_rows(op.outer) or max_rows(op.inner)
  return None
