"""Conditioner networks (the s/t nets of coupling layers), as flax modules.

Only these networks are flax modules; the flows around them are pure
bijectors built from params.  No BatchNorm anywhere: a prior used for MAP
estimation must be a fixed function of its params.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def checked_param(module: nn.Module, name: str, init, shape, dtype):
  """``module.param(name, init, shape, dtype)``, minus flax's per-apply
  check: once params exist, flax traces ``init`` under ``jax.eval_shape``
  to compare shapes, on every param of every apply, which was ~20% of
  tracing the shipped prior's MAP step (1,632 traced initialisers).  The
  same shape check here is a tuple comparison."""
  if not module.has_variable("params", name):
    return module.param(name, init, shape, dtype)
  value = module.get_variable("params", name)
  if tuple(jnp.shape(value)) != tuple(shape):
    raise ValueError(
        f"params: {type(module).__name__} {module.name!r} param {name!r} has "
        f"shape {tuple(jnp.shape(value))}, expected {tuple(shape)} (params "
        "made for another config?)")
  return value


def conv_same(x, kernel):
  """Stride-1 'SAME' convolution, NHWC input, HWIO kernel; any leading
  batch axes (as ``flax.linen.Conv`` allows)."""
  lead = x.shape[:-3]
  y = jax.lax.conv_general_dilated(
      x.reshape((-1,) + x.shape[-3:]), kernel, (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y.reshape(lead + y.shape[1:])


class WNConv(nn.Module):
  """Weight-normalised convolution (Salimans & Kingma, 2016).

  kernel[..., o] = scale[o] * direction[..., o] / ||direction[..., o]||.

  The params are ``direction``, ``scale`` and ``bias``.  Training applies an
  L2 penalty to every ``scale`` (the paper's "weight normalization
  regularization"); see ``weightnorm_l2``.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    shape = tuple(self.kernel_size) + (cin, self.features)
    pd = self.param_dtype
    v = checked_param(self, "direction", nn.initializers.normal(0.05), shape,
                      pd)
    # Unit-norm filters preserve the input's variance at init.
    g = checked_param(self, "scale", nn.initializers.ones, (self.features,),
                      pd)
    b = checked_param(self, "bias", nn.initializers.zeros, (self.features,),
                      pd)
    dtype = jnp.result_type(x, v)
    x, v, g, b = (jnp.asarray(a, dtype) for a in (x, v, g, b))
    norm = jnp.sqrt(jnp.sum(v * v, axis=(0, 1, 2)) + 1e-12)
    kernel = v * (g / norm)
    if shape[:2] == (1, 1):
      # A 1x1 convolution is a matmul over channels.  Written as one, its
      # forward is bit-identical, and XLA:CPU's gradients run 1.5x (input)
      # to 3.6x (kernel) faster than through its convolution (Glow's
      # 512-wide layer at 32x32; BENCHMARKS.md).
      y = jnp.dot(x.reshape(-1, cin), kernel[0, 0]).reshape(
          x.shape[:-1] + (self.features,))
    else:
      y = conv_same(x, kernel)
    return y + b


class _ZeroInitConv3x3(nn.Module):
  """``conv(x, kernel) + bias``, both zero at init; the params (``kernel``
  HWIO, ``bias``) and the result are ``flax.linen.Conv``'s with SAME
  padding, without its per-apply shape tracing (``checked_param``)."""

  features: int

  @nn.compact
  def __call__(self, x):
    shape = (3, 3, x.shape[-1], self.features)
    k = checked_param(self, "kernel", nn.initializers.zeros, shape,
                      jnp.float32)
    b = checked_param(self, "bias", nn.initializers.zeros, (self.features,),
                      jnp.float32)
    dtype = jnp.result_type(x, k, b)
    x, k, b = (jnp.asarray(a, dtype) for a in (x, k, b))
    return conv_same(x, k) + b


class ZeroConv(nn.Module):
  """A 3x3 convolution whose kernel and bias start at zero.

  As the last layer of a conditioner it makes every new coupling layer the
  identity, so a freshly initialised flow is the identity on its latent path.
  """

  features: int

  @nn.compact
  def __call__(self, x):
    # Named as flax.linen.Conv was, so checkpoints keep their paths.
    return _ZeroInitConv3x3(self.features, name="Conv_0")(x)


class ResNetConditioner(nn.Module):
  """RealNVP's s/t network: a ResNet of weight-normalised 3x3 convolutions.

  in-conv -> ``num_blocks`` x [relu, conv, relu, conv, + skip] -> relu ->
  zero-initialised out-conv with ``out_channels`` features.
  """

  hidden_channels: int
  num_blocks: int
  out_channels: int

  @nn.compact
  def __call__(self, x):
    h = WNConv(self.hidden_channels)(x)
    for _ in range(self.num_blocks):
      r = WNConv(self.hidden_channels)(nn.relu(h))
      r = WNConv(self.hidden_channels)(nn.relu(r))
      h = h + r
    return ZeroConv(self.out_channels)(nn.relu(h))


class GlowConditioner(nn.Module):
  """Glow's s/t network: conv3x3 -> relu -> conv1x1 -> relu -> zero conv3x3."""

  hidden_channels: int
  out_channels: int

  @nn.compact
  def __call__(self, x):
    h = nn.relu(WNConv(self.hidden_channels, (3, 3))(x))
    h = nn.relu(WNConv(self.hidden_channels, (1, 1))(h))
    return ZeroConv(self.out_channels)(h)


def weightnorm_l2(params) -> jax.Array:
  """Sum of squares of every weight-norm ``scale`` in a params pytree."""
  total = jnp.zeros(())
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", None))
    if name == "scale" and any(
        "WNConv" in str(getattr(p, "key", "")) for p in path):
      total = total + jnp.sum(jnp.square(leaf))
  return total
