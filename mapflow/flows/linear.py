"""A linear Gaussian flow ``x = mu + L z``: the prior with closed forms.

With ``z ~ N(0, I)`` this is ``x ~ N(mu, L L^T)``.  Data direction
``z = L^{-1} (x - mu)``, log|det dz/dx| = -sum(log|diag L|).  It exists for
tests and teaching: MAP estimates under it have closed forms.  Unlike the
image flows it has no pixel preprocessing, so its support is all of R^d.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mapflow.flows import config_checks as cc
from mapflow.flows.base import ImageBijector
from mapflow.flows.flow import Flow, make_flow


@dataclasses.dataclass(frozen=True)
class LinearGaussianConfig:
  """Shape of a linear Gaussian flow; its mean and factor are params."""

  image_shape: Tuple[int, int, int] = (2, 2, 1)
  num_bits: int = 8

  def __post_init__(self):
    object.__setattr__(self, "image_shape", cc.check_image_shape(
        "LinearGaussianConfig", self.image_shape))


class LinearGaussianLayer(ImageBijector):
  """Data direction ``z = L^{-1} (x - mu)`` on flattened events."""

  def __init__(self, params):
    super().__init__(is_constant_jacobian=True)
    self._mu = params["mean"]
    self._l = jnp.tril(params["scale_tril"])

  def _forward(self, x):
    n = x.shape[0]
    r = (x.reshape(n, -1) - self._mu.reshape(1, -1)).T
    z = jax.scipy.linalg.solve_triangular(self._l, r, lower=True).T
    ld = -jnp.sum(jnp.log(jnp.abs(jnp.diag(self._l))))
    return z.reshape(x.shape), jnp.full((n,), ld, x.dtype)

  def _inverse(self, z):
    n = z.shape[0]
    x = z.reshape(n, -1) @ self._l.T + self._mu.reshape(1, -1)
    ld = jnp.sum(jnp.log(jnp.abs(jnp.diag(self._l))))
    return x.reshape(z.shape), jnp.full((n,), ld, z.dtype)


class _LinearSpec:

  def init(self, key, x):
    d = math.prod(x.shape[1:])
    del key
    return {"mean": jnp.zeros(x.shape[1:], x.dtype),
            "scale_tril": jnp.eye(d, dtype=x.dtype)}

  def build(self, params):
    return LinearGaussianLayer(params)


def linear_gaussian(cfg: LinearGaussianConfig) -> Flow:
  """A ``Flow`` with params ``{"mean": (H, W, C), "scale_tril": (d, d)}``.

  ``init`` returns the standard normal (mean 0, L = I); set the params to
  any mean and lower-triangular factor with a nonzero diagonal.
  """
  return make_flow(cfg, [_LinearSpec()], cfg.image_shape, cfg.num_bits)


def linear_gaussian_params(mean, scale_tril):
  """Wraps ``mean`` and ``L`` as params of ``linear_gaussian`` (a list):
  ``L`` square, of the mean's size, with a nonzero finite diagonal (a zero
  makes the density NaN)."""
  mean, tril = jnp.asarray(mean), jnp.asarray(scale_tril)
  d = int(np.prod(mean.shape))
  if tril.shape != (d, d):
    raise ValueError(f"scale_tril: got shape {tuple(tril.shape)}, expected "
                     f"({d}, {d}) for a mean of shape {tuple(mean.shape)}")
  if not isinstance(tril, jax.core.Tracer):
    diag = np.asarray(jnp.diagonal(tril))
    if not np.all(np.isfinite(diag) & (diag != 0)):
      raise ValueError("scale_tril: got a diagonal with zero or non-finite "
                       "entries, expected a nonzero finite diagonal")
  return [{"mean": mean, "scale_tril": tril}]
