"""Hyperparameters from the measurements alone: held-out prediction.

A share of the measurement entries (pixels for denoising, rows for
compressed sensing) is held out.  For each candidate β the MAP is computed
from the rest (``operators.masked``), and scored by how well it predicts
the held-out entries, their mean squared error

    E(β) = mean_{i ∈ held out} (y_i - f(x̂_β)_i - μ_i)²,

μ the noise's mean.  Since the noise is independent of x̂, E(β) estimates
the held-out entries' error ``(f(x) - f(x̂_β))_i²`` plus the noise's
variance, a constant: the β that predicts held-out data best is the one
that recovers them best, and no clean image is ever needed.  The error is
unweighted on purpose: weighting it by the noise model's precision (the
held-out log-likelihood) lets the few entries of tiny std dominate
(RADIAL's corners: std ~7e-6 s), and it then preferred a 15 dB recovery to
a 37 dB one on RADIAL's validation images.  The noise must be independent
across entries (Gaussian with any std map, SINUSOIDAL-1D's shifted one),
so held-out entries carry no information about the kept ones' noise; a
flow noise model is refused.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mapflow import noise as noise_lib
from mapflow import operators as ops_lib


class HoldoutConfig(NamedTuple):
  """``fraction`` of the measurement entries held out (the same entries in
  every example), drawn with ``key`` (default ``PRNGKey(0)``)."""

  fraction: float = 0.2
  key: Optional[jax.Array] = None


class HoldoutChoice(NamedTuple):
  """``beta``: the β with the smallest held-out error; ``errors`` (P,):
  the mean over examples of each β's; ``per_example`` (P, B)."""

  beta: float
  errors: np.ndarray
  per_example: np.ndarray


def holdout_keep(event_shape, config: Optional[HoldoutConfig] = None):
  """0/1 over a measurement's event shape: 0 on the held-out entries (a
  ``fraction`` of them, at least one, at most all but one)."""
  cfg = HoldoutConfig() if config is None else config
  if not 0.0 < cfg.fraction < 1.0:
    raise ValueError(f"fraction: got {cfg.fraction!r}, expected a share in "
                     "(0, 1)")
  n = int(np.prod(event_shape))
  k = min(max(1, int(round(cfg.fraction * n))), n - 1)
  key = jax.random.PRNGKey(0) if cfg.key is None else cfg.key
  held = jax.random.permutation(key, n)[:k]
  return jnp.ones((n,)).at[held].set(0.0).reshape(tuple(event_shape))


def check_factorises(noise):
  if not hasattr(noise, "masked_log_prob"):
    raise ValueError(
        f"noise: got {type(noise).__name__}, whose density does not factorise "
        "over entries, so held-out entries have no likelihood of their own; "
        "expected Gaussian noise (mapflow.noise.gaussian, sinusoidal, "
        "radial, sinusoidal_1d)")


def heldout_error(noise, y, fx, keep):
  """Per example: the mean squared prediction error of the entries
  ``keep`` leaves out (0), ``(y - f(x̂) - μ)²`` over them, μ the noise's
  mean."""
  check_factorises(noise)
  try:
    mean = noise.mean()
  except (AttributeError, NotImplementedError):  # zero-mean noise
    mean = 0.0
  held = jnp.broadcast_to(1.0 - keep, jnp.shape(y))
  r2 = jnp.square(y - fx - mean) * held
  axes = tuple(range(1, r2.ndim))
  return jnp.sum(r2, axis=axes) / jnp.maximum(jnp.sum(held, axis=axes), 1.0)


def select_beta(y, *, prior, params, operator, noise, betas, steps=100,
                optimizer=None, config=None,
                holdout: Optional[HoldoutConfig] = None) -> HoldoutChoice:
  """The β among ``betas`` whose MAP, fitted without the held-out entries,
  best predicts them (smallest ``heldout_error``; ``mapflow.sweep`` over
  the betas in one program; ``config`` is its ``SolverConfig``)."""
  from mapflow.solve import api
  check_factorises(noise)
  y = jnp.asarray(y)
  keep = holdout_keep(y.shape[1:], holdout)
  grid = api.sweep(y, prior=prior, params=params,
                   operator=ops_lib.masked(operator, keep), noise=noise,
                   betas=betas, steps=steps, optimizer=optimizer,
                   config=config)
  per = np.stack([np.asarray(heldout_error(
      noise, y, operator(grid.x[i, 0]), keep))
                  for i in range(grid.x.shape[0])])
  per = np.where(np.isfinite(per), per, np.inf)
  errors = per.mean(axis=1)
  betas = np.atleast_1d(np.asarray(betas, np.float64))
  return HoldoutChoice(float(betas[int(np.argmin(errors))]), errors, per)
