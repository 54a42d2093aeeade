"""Shared pieces for image bijectors.

Every bijector here acts on events of shape ``(H, W, C)`` and accepts any
number of leading batch axes (none, one, or several from ``vmap`` and
sweeps).  Convolutions need exactly one batch axis, so the leading axes are
flattened on the way in and restored on the way out.

Direction convention: a *layer* is written in the data direction, ``x -> h``
(towards the latent), as in Dinh et al.  The generator ``G: z -> x`` of a
flow is the inverse of the chain of layers (see ``mapflow.flows.flow``).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Tuple

import distrax
import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any


def flatten_batch(x: Array) -> Tuple[Array, Tuple[int, ...]]:
  """Reshapes ``(*lead, H, W, C)`` to ``(prod(lead), H, W, C)``."""
  lead = x.shape[:-3]
  return x.reshape((-1,) + x.shape[-3:]), lead


def unflatten_batch(x: Array, ld: Array, lead: Tuple[int, ...]):
  return x.reshape(lead + x.shape[1:]), ld.reshape(lead)


class ImageBijector(distrax.Bijector):
  """A bijector on ``(H, W, C)`` events with batch-flattening built in.

  Subclasses implement ``_forward(x)`` and ``_inverse(y)`` on arrays of shape
  ``(N, H, W, C)``, each returning ``(out, log_det)`` with ``log_det`` of
  shape ``(N,)``.
  """

  def __init__(self, is_constant_jacobian: bool = False):
    super().__init__(event_ndims_in=3, event_ndims_out=3,
                     is_constant_jacobian=is_constant_jacobian)

  def forward_and_log_det(self, x):
    x, lead = flatten_batch(jnp.asarray(x))
    y, ld = self._forward(x)
    return unflatten_batch(y, ld, lead)

  def inverse_and_log_det(self, y):
    y, lead = flatten_batch(jnp.asarray(y))
    x, ld = self._inverse(y)
    return unflatten_batch(x, ld, lead)

  def _forward(self, x):
    raise NotImplementedError

  def _inverse(self, y):
    raise NotImplementedError


class LayerSpec(Protocol):
  """A parametrised layer: a factory of bijectors from params.

  ``init(key, x)`` returns params (data-dependent where the layer needs it;
  ``x`` is a batch arriving in the data direction), and ``build(params)``
  returns the data-direction ``distrax.Bijector``.
  """

  def init(self, key: Array, x: Array) -> PyTree:
    ...

  def build(self, params: PyTree) -> distrax.Bijector:
    ...


def init_chain(specs, key: Array, x: Array):
  """Initialises ``specs`` in order, pushing ``x`` through each new layer.

  Returns ``(params_list, h)`` where ``h`` is ``x`` after all layers, so that
  a later layer's data-dependent init sees what it will see in training.
  """
  params = []
  keys = jax.random.split(key, max(len(specs), 1))
  h = x
  for spec, k in zip(specs, keys):
    p = spec.init(k, h)
    h, _ = spec.build(p).forward_and_log_det(h)
    params.append(p)
  return params, h


def build_chain(specs, params) -> distrax.Bijector:
  """The data-direction composition ``spec_n o ... o spec_1``."""
  if len(params) != len(specs):
    # zip would drop the extra layers silently: params of another depth.
    raise ValueError(f"params: got {len(params)} layers' params, expected "
                     f"{len(specs)} (one per layer of this flow)")
  bijectors = [s.build(p) for s, p in zip(specs, params)]
  # distrax.Chain applies its list last-first.
  return distrax.Chain(bijectors[::-1])


class ChainSpec:
  """Several specs in sequence, seen as one spec with a list of params."""

  def __init__(self, specs):
    self.specs = list(specs)

  def init(self, key, x):
    return init_chain(self.specs, key, x)[0]

  def build(self, params):
    return build_chain(self.specs, params)


def stateless(bijector_fn: Callable[[], distrax.Bijector]):
  """A spec with no params (squeeze, fixed permutations, preprocessing)."""

  class _Stateless:
    def init(self, key, x):
      del key, x
      return ()

    def build(self, params):
      del params
      return bijector_fn()

  return _Stateless()
