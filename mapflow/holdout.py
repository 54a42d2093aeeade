"""Hyperparameters from the measurements alone: held-out likelihood.

A share of the measurement entries (pixels for denoising, rows for
compressed sensing) is held out.  For each candidate β the MAP is computed
from the rest (``operators.masked``), and scored by the noise model's
log-likelihood of the held-out entries,

    S(β) = Σ_{i ∈ held out} log p_Δ,i (y_i - f(x̂_β)_i),

the quantity a good β predicts well without ever seeing a clean image.
The noise must factorise over entries (Gaussian noise with any std map,
SINUSOIDAL-1D's shifted one), so that the held-out entries' likelihood is
the marginal ``masked_log_prob``; a flow noise model does not, and is
refused.
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
  """``beta``: the β with the highest held-out log-likelihood; ``scores``
  (P,): the mean over examples of each β's; ``per_example`` (P, B)."""

  beta: float
  scores: np.ndarray
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


def heldout_log_likelihood(noise, y, fx, keep):
  """Per example: the noise log-likelihood of the entries ``keep`` leaves
  out (0), ``log p_Δ(y - f(x̂))`` over them."""
  check_factorises(noise)
  return noise_lib.log_prob(noise, y - fx, 1.0 - keep)


def select_beta(y, *, prior, params, operator, noise, betas, steps=100,
                optimizer=None, config=None,
                holdout: Optional[HoldoutConfig] = None) -> HoldoutChoice:
  """The β among ``betas`` whose MAP, fitted without the held-out entries,
  best predicts them (``mapflow.sweep`` over the betas in one program;
  ``config`` is its ``SolverConfig``)."""
  from mapflow.solve import api
  check_factorises(noise)
  y = jnp.asarray(y)
  keep = holdout_keep(y.shape[1:], holdout)
  grid = api.sweep(y, prior=prior, params=params,
                   operator=ops_lib.masked(operator, keep), noise=noise,
                   betas=betas, steps=steps, optimizer=optimizer,
                   config=config)
  per = np.stack([np.asarray(heldout_log_likelihood(
      noise, y, operator(grid.x[i, 0]), keep))
                  for i in range(grid.x.shape[0])])
  per = np.where(np.isfinite(per), per, -np.inf)
  scores = per.mean(axis=1)
  betas = np.atleast_1d(np.asarray(betas, np.float64))
  return HoldoutChoice(float(betas[int(np.argmax(scores))]), scores, per)
