"""Coupling layers: checkerboard-masked and channel-split, affine or additive.

Data direction (``x -> y``), with ``b`` the conditioning part and
``s, t = net(b)``:

    affine:    y_2 = x_2 * exp(s) + t,       log|det| = sum(s)
    additive:  y_2 = x_2 + t,                log|det| = 0
    inverse:   x_2 = (y_2 - t) * exp(-s)     (b passes through unchanged)

The log-scale ``s`` is bounded: ``rescale * tanh(raw)`` with a learned
per-channel ``rescale`` (RealNVP, "tanh"), or
``log_sigmoid(raw + 2) - log_sigmoid(2)`` (Glow's sigmoid scale, shifted so
that ``raw = 0`` is the identity; "sigmoid").  The conditioner's last layer
starts at zero, so every new coupling layer is the identity.
"""

from __future__ import annotations

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mapflow.flows.base import ImageBijector
from mapflow.flows.layers import ReverseChannels

SCALE_KINDS = ("tanh", "sigmoid", "additive")


def _log_scale(kind: str, raw, rescale):
  if kind == "tanh":
    return rescale * jnp.tanh(raw)
  if kind == "sigmoid":
    return jax.nn.log_sigmoid(raw + 2.0) - jax.nn.log_sigmoid(2.0)
  raise ValueError(f"scale kind: got {kind!r}, expected one of {SCALE_KINDS}")


def checkerboard(height: int, width: int, parity: int) -> np.ndarray:
  """Mask of shape (H, W, 1): 1 where (i + j) % 2 == parity (conditioning)."""
  i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return ((i + j) % 2 == parity).astype(np.float32)[..., None]


class MaskedCoupling(ImageBijector):
  """Coupling with a spatial binary mask ``b`` (1 = conditioning pixel).

  The net sees ``concat(b * x, b)`` and its outputs are zeroed where b = 1:
  ``y = x * exp((1-b) s) + (1-b) t``.
  """

  def __init__(self, net: nn.Module, net_params, mask, kind: str,
               rescale=None):
    super().__init__(is_constant_jacobian=(kind == "additive"))
    self._net, self._p, self._mask = net, net_params, mask
    self._kind, self._rescale = kind, rescale

  def _mask_as(self, x):
    # In the input's dtype: a float32 mask would promote a bfloat16 flow.
    return jnp.asarray(self._mask).astype(x.dtype)

  def _shift_and_log_scale(self, x_given):
    mask = self._mask_as(x_given)
    b = jnp.broadcast_to(mask, x_given.shape[:-1] + (1,))
    out = self._net.apply({"params": self._p},
                          jnp.concatenate([x_given, b], axis=-1))
    c = x_given.shape[-1]
    free = 1.0 - mask
    if self._kind == "additive":
      return out * free, jnp.zeros_like(x_given)
    t, raw = out[..., :c], out[..., c:]
    return t * free, _log_scale(self._kind, raw, self._rescale) * free

  def _forward(self, x):
    t, s = self._shift_and_log_scale(x * self._mask_as(x))
    return x * jnp.exp(s) + t, jnp.sum(s, axis=(1, 2, 3))

  def _inverse(self, y):
    t, s = self._shift_and_log_scale(y * self._mask_as(y))
    return (y - t) * jnp.exp(-s), -jnp.sum(s, axis=(1, 2, 3))


class ChannelCoupling(ImageBijector):
  """Coupling split along channels: the first ``C//2`` condition the rest."""

  def __init__(self, net: nn.Module, net_params, kind: str, rescale=None):
    super().__init__(is_constant_jacobian=(kind == "additive"))
    self._net, self._p, self._kind, self._rescale = net, net_params, kind, rescale

  def _shift_and_log_scale(self, x1, c2):
    out = self._net.apply({"params": self._p}, x1)
    if self._kind == "additive":
      return out, jnp.zeros_like(out)
    t, raw = out[..., :c2], out[..., c2:]
    return t, _log_scale(self._kind, raw, self._rescale)

  def _forward(self, x):
    c1 = x.shape[-1] // 2
    x1, x2 = x[..., :c1], x[..., c1:]
    t, s = self._shift_and_log_scale(x1, x2.shape[-1])
    y2 = x2 * jnp.exp(s) + t
    return jnp.concatenate([x1, y2], -1), jnp.sum(s, axis=(1, 2, 3))

  def _inverse(self, y):
    c1 = y.shape[-1] // 2
    y1, y2 = y[..., :c1], y[..., c1:]
    t, s = self._shift_and_log_scale(y1, y2.shape[-1])
    x2 = (y2 - t) * jnp.exp(-s)
    return jnp.concatenate([y1, x2], -1), -jnp.sum(s, axis=(1, 2, 3))


def _coupling_params(key, net, x_in, kind, channels):
  params = {"net": net.init(key, x_in)["params"]}
  if kind == "tanh":
    params["rescale"] = jnp.ones((channels,), x_in.dtype)
  return params


class MaskedCouplingStep:
  """Step spec for a stack of checkerboard couplings; the mask is a const."""

  def __init__(self, net: nn.Module, kind: str):
    self.net, self.kind = net, kind

  def init(self, key, x, const):
    x_in = jnp.concatenate(
        [x * const["mask"], jnp.broadcast_to(const["mask"], x.shape[:-1] + (1,))],
        -1)
    return _coupling_params(key, self.net, x_in, self.kind, x.shape[-1])

  def build(self, params, const):
    return MaskedCoupling(self.net, params["net"], const["mask"], self.kind,
                          params.get("rescale"))


class ChannelCouplingStep:
  """Step spec: a channel-split coupling followed by a channel reversal.

  The reversal (a fixed permutation, log|det| = 0) makes every step of a
  stack identical, so stacks can run under ``lax.scan``, while the two
  halves still take turns being transformed.
  """

  def __init__(self, net: nn.Module, kind: str):
    self.net, self.kind = net, kind

  def init(self, key, x, const):
    del const
    c1 = x.shape[-1] // 2
    return _coupling_params(key, self.net, x[..., :c1], self.kind,
                            x.shape[-1] - c1)

  def build(self, params, const):
    del const
    coupling = ChannelCoupling(self.net, params["net"], self.kind,
                               params.get("rescale"))
    return distrax.Chain([ReverseChannels(), coupling])
