"""Volume-changing and shape-changing layers that are not couplings.

Each is an ``ImageBijector`` written in the data direction ``x -> y``.
"""

from __future__ import annotations

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from mapflow.flows.base import ImageBijector, init_chain, build_chain


class Squeeze(ImageBijector):
  """Space-to-depth: (H, W, C) -> (H/2, W/2, 4C), a permutation (log|det|=0).

  Output channel ``(2a + b) * C + c`` at (i, j) holds input (2i + a, 2j + b, c).
  """

  def __init__(self):
    super().__init__(is_constant_jacobian=True)

  def _forward(self, x):
    n, h, w, c = x.shape
    y = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h // 2, w // 2, 4 * c), jnp.zeros((n,), x.dtype)

  def _inverse(self, y):
    n, h, w, c4 = y.shape
    c = c4 // 4
    x = y.reshape(n, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, 2 * h, 2 * w, c), jnp.zeros((n,), y.dtype)


class ReverseChannels(ImageBijector):
  """Reverses the channel order, a fixed permutation (log|det| = 0)."""

  def __init__(self):
    super().__init__(is_constant_jacobian=True)

  def _forward(self, x):
    return x[..., ::-1], jnp.zeros(x.shape[:1], x.dtype)

  _inverse = _forward


class SplitApply(ImageBijector):
  """Multiscale factor-out: channels ``[:k]`` leave, ``inner`` acts on the rest.

  ``y = concat(x[..., :k], inner(x[..., k:]))``; log|det| is inner's.  The
  factored-out half is already latent; keeping it in the same array (and
  unsqueezing afterwards) gives a latent ``z`` of exactly the image's shape.
  """

  def __init__(self, inner: distrax.Bijector, k: int):
    super().__init__()
    self._inner, self._k = inner, k

  def _forward(self, x):
    a, b = x[..., :self._k], x[..., self._k:]
    b, ld = self._inner.forward_and_log_det(b)
    return jnp.concatenate([a, b], -1), ld

  def _inverse(self, y):
    a, b = y[..., :self._k], y[..., self._k:]
    b, ld = self._inner.inverse_and_log_det(b)
    return jnp.concatenate([a, b], -1), ld


class SplitApplySpec:
  """Spec of ``SplitApply`` around a chain of inner specs."""

  def __init__(self, inner_specs, k: int):
    self.inner_specs, self.k = list(inner_specs), k

  def init(self, key, x):
    return init_chain(self.inner_specs, key, x[..., self.k:])[0]

  def build(self, params):
    return SplitApply(build_chain(self.inner_specs, params), self.k)


class ActNorm(ImageBijector):
  """Per-channel affine map: ``y = x * exp(log_scale) + bias``.

  log|det| = H * W * sum(log_scale).  ``actnorm_init`` sets the params from a
  batch so that the output has zero mean and unit variance per channel.
  """

  def __init__(self, params):
    super().__init__(is_constant_jacobian=True)
    self._b, self._s = params["bias"], params["log_scale"]

  def _forward(self, x):
    n, h, w, _ = x.shape
    ld = h * w * jnp.sum(self._s)
    return x * jnp.exp(self._s) + self._b, jnp.full((n,), ld, x.dtype)

  def _inverse(self, y):
    n, h, w, _ = y.shape
    ld = -h * w * jnp.sum(self._s)
    return (y - self._b) * jnp.exp(-self._s), jnp.full((n,), ld, y.dtype)


def actnorm_init(x, eps: float = 1e-6):
  """Data-dependent ActNorm params: zero mean, unit variance on ``x``."""
  mean = jnp.mean(x, axis=(0, 1, 2))
  std = jnp.std(x, axis=(0, 1, 2))
  log_scale = -jnp.log(std + eps)
  return {"bias": -mean * jnp.exp(log_scale), "log_scale": log_scale}


def lu_init(channels: int, rng: np.random.RandomState):
  """A random rotation as ``W = P L U``, U's diagonal as ``sign * exp(log_s)``.

  Returns ``(params, const)``: learned ``l``, ``u``, ``log_s`` and the fixed
  permutation ``perm`` and ``sign``.
  """
  q, _ = np.linalg.qr(rng.randn(channels, channels))
  import scipy.linalg  # lazy: only needed at construction
  p, l, u = scipy.linalg.lu(q)
  d = np.diag(u)
  params = {"l": np.tril(l, -1).astype(np.float32),
            "u": np.triu(u, 1).astype(np.float32),
            "log_s": np.log(np.abs(d)).astype(np.float32)}
  const = {"perm": p.astype(np.float32), "sign": np.sign(d).astype(np.float32)}
  return params, const


class InvConv1x1(ImageBijector):
  """Invertible 1x1 convolution, LU-parametrised (Kingma & Dhariwal, 2018).

  ``W = P (L + I) (U + diag(sign * exp(log_s)))`` with L strictly lower, U
  strictly upper triangular.  Per pixel ``y = W x``;
  log|det| = H * W * sum(log_s).
  """

  def __init__(self, params, const):
    super().__init__(is_constant_jacobian=True)
    c = params["log_s"].shape[-1]
    eye = jnp.eye(c, dtype=params["l"].dtype)
    self._lower = jnp.tril(params["l"], -1) + eye
    dtype = params["l"].dtype  # constants follow the params' dtype
    self._upper = jnp.triu(params["u"], 1) + jnp.diag(
        jnp.asarray(const["sign"]).astype(dtype) * jnp.exp(params["log_s"]))
    self._perm = jnp.asarray(const["perm"]).astype(dtype)
    self._log_s = params["log_s"]

  def weight(self):
    return self._perm @ self._lower @ self._upper

  def _forward(self, x):
    n, h, w, _ = x.shape
    y = jnp.einsum("nhwi,ji->nhwj", x, self.weight())
    return y, jnp.full((n,), h * w * jnp.sum(self._log_s), x.dtype)

  def _inverse(self, y):
    n, h, w, c = y.shape
    eye = jnp.eye(c, dtype=y.dtype)
    # W^-1 = U^-1 L^-1 P^T, by triangular solves rather than a general inverse.
    l_inv = jax.scipy.linalg.solve_triangular(self._lower, eye, lower=True,
                                              unit_diagonal=True)
    u_inv = jax.scipy.linalg.solve_triangular(self._upper, eye, lower=False)
    w_inv = u_inv @ l_inv @ self._perm.T
    x = jnp.einsum("nhwi,ji->nhwj", y, w_inv)
    return x, jnp.full((n,), -h * w * jnp.sum(self._log_s), y.dtype)


class LogitPreprocess(ImageBijector):
  """Pixels in [0, 1] to logit space: ``y = logit(a + (1 - 2a) x)``.

  log|det| = sum[log(1 - 2a) - log p - log(1 - p)], ``p = a + (1 - 2a) x``.
  """

  def __init__(self, alpha: float):
    super().__init__()
    self._a = alpha

  def _forward(self, x):
    a = self._a
    p = a + (1 - 2 * a) * x
    y = jnp.log(p) - jnp.log1p(-p)
    ld = math.log(1 - 2 * a) - jnp.log(p) - jnp.log1p(-p)
    return y, jnp.sum(ld, axis=(1, 2, 3))

  def _inverse(self, y):
    a = self._a
    x = (jax.nn.sigmoid(y) - a) / (1 - 2 * a)
    ld = -math.log(1 - 2 * a) + jax.nn.log_sigmoid(y) + jax.nn.log_sigmoid(-y)
    return x, jnp.sum(ld, axis=(1, 2, 3))


class CentrePreprocess(ImageBijector):
  """Glow's convention: ``y = x - 0.5``, pixels in [-0.5, 0.5]; log|det| = 0."""

  def __init__(self):
    super().__init__(is_constant_jacobian=True)

  def _forward(self, x):
    return x - 0.5, jnp.zeros(x.shape[:1], x.dtype)

  def _inverse(self, y):
    return y + 0.5, jnp.zeros(y.shape[:1], y.dtype)
