"""Hyperparameters from the measurements alone: held-out prediction, and
recorrupted measurements for Gaussian noise.

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
(RADIAL's corners: std ~7e-5 s), and it then preferred a 15 dB recovery to
a 37 dB one on RADIAL's validation images.  The noise must be independent
across entries (Gaussian with any std map, SINUSOIDAL-1D's shifted one),
so held-out entries carry no information about the kept ones' noise; a
flow noise model is refused.

Recorrupted measurements (Gaussian noise of known std σ, any operator f
that is not 1-bit): draw z ~ N(0, diag σ²) and split y into

    y_fit = y + α z,    y_check = y - z / α.

Their noises, δ + α z and δ - z / α, are jointly Gaussian with covariance
σ² - σ² = 0: independent.  So for the MAP x̂ fitted to y_fit (under the
noise model of std σ·√(1 + α²)),

    E ||y_check - f(x̂) - μ||² = E ||f(x̂) - f(x)||² + Σ σ² (1 + 1/α²),

and the mean of the left side less the constant estimates the MAP's mean
squared error in measurement space (for denoising, the image's) without
leaving any entry out.  Its flaw is the level: the MAP is judged on data
(1 + α²) times noisier in variance.  The error is the measurements':
the image's under an invertible operator (denoising), but under a mask
it sees only the kept pixels, so for imputation hold entries out.  Where pixel hold-out judges how well
a MAP *inpaints* a pixel (on RADIAL it preferred faster learning rates,
which fill held-out pixels sooner, over better denoisers), this judges the
denoising itself.

Residual typicality (noise that neither factorises nor can be drawn
afresh around y, e.g. a flow's: handwritten digits).  With noise-only
examples δ_1..δ_n the noise model did not train on, the rate

    h = mean_j log p_Δ(δ_j) / d

is the log-density per entry that real noise has.  A MAP's residuals
r_i = y_i - f(x̂_i) are scored by how far theirs is from it,

    T = | mean_i log p_Δ(r_i) / d - h |,

smaller better.  For Gaussian noise of std σ this is Morozov's discrepancy
principle, |mean ||r||² / (d σ²) - mean ||δ||² / (d σ²)| / 2: the residual
should be as large as the noise, not smaller (overfitting: the signal
absorbs noise) nor larger (the prior's pull too strong).  Like Morozov's
principle it leans to oversmoothing: at the best β a MAP still fits some
of the noise, so its residual is more probable than real noise, and T
prefers a somewhat stronger prior.  It judges the fit in measurement space
only, so configurations whose residuals are equally typical tie.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mapflow import noise as noise_lib
from mapflow import operators as ops_lib
from mapflow.solve import starts


class HoldoutConfig(NamedTuple):
  """``fraction`` of the measurement entries held out (the same entries in
  every example), drawn with ``key`` (default ``PRNGKey(0)``)."""

  fraction: float = 0.2
  key: Optional[jax.Array] = None


class HoldoutChoice(NamedTuple):
  """``beta``: the β with the smallest held-out error; ``errors`` (P,):
  the mean over examples of each β's; ``per_example`` (P, B); ``x``
  (B, ...): the chosen β's MAP (fitted without the held-out entries);
  ``keep``: the 0/1 map of kept entries."""

  beta: float
  errors: np.ndarray
  per_example: np.ndarray
  x: Optional[jax.Array] = None
  keep: Optional[jax.Array] = None


class NoiseScaleEstimate(NamedTuple):
  """``scale``: the estimated s in ``std = s · unit_std``; ``error_var``:
  the fitted mean squared error of ``f(x̂)`` on the held-out entries;
  ``identifiable``: False when ``unit_std`` is constant, so error and noise
  cannot be told apart and ``scale`` is an upper bound (error_var = 0)."""

  scale: float
  error_var: float
  identifiable: bool


def holdout_keep(event_shape, config: Optional[HoldoutConfig] = None):
  """0/1 over a measurement's event shape: 0 on the held-out entries (a
  ``fraction`` of them, at least one, at most all but one)."""
  cfg = HoldoutConfig() if config is None else config
  if not starts.is_real_number(cfg.fraction) or \
      not 0.0 < float(cfg.fraction) < 1.0:
    raise ValueError(f"fraction: got {cfg.fraction!r}, expected a share in "
                     "(0, 1)")
  n = int(np.prod(event_shape))
  if n < 2:
    # Holding out the only entry leaves nothing to fit; keeping it leaves
    # nothing to score (every configuration would tie at 0).
    raise ValueError(f"y: got {n} measurement entr{'y' if n == 1 else 'ies'}"
                     f" per example (event shape {tuple(event_shape)}), "
                     "expected at least 2 to hold some out")
  k = min(max(1, int(round(cfg.fraction * n))), n - 1)
  key = (jax.random.PRNGKey(0) if cfg.key is None
         else starts.check_key(cfg.key, "key"))
  held = jax.random.permutation(key, n)[:k]
  return jnp.ones((n,)).at[held].set(0.0).reshape(tuple(event_shape))


def check_factorises(noise):
  if not hasattr(noise, "masked_log_prob"):
    raise ValueError(
        f"noise: got {type(noise).__name__}, whose density does not factorise "
        "over entries, so held-out entries have no likelihood of their own; "
        "expected Gaussian noise (mapflow.noise.gaussian, sinusoidal, "
        "radial, sinusoidal_1d)")


def noise_mean(noise):
  """The noise's mean (0.0 for zero-mean noise without a ``mean``)."""
  try:
    return noise.mean()
  except (AttributeError, NotImplementedError):
    return 0.0


def _check_keep(keep, y):
  """Refuses a ``keep`` that is not a 0/1 map over one measurement (the
  shape of ``y[0]``) holding out at least one entry: any other would
  score every configuration alike, or the wrong entries."""
  k = np.asarray(keep)
  event = tuple(np.shape(y)[1:])
  try:
    np.broadcast_to(k, event)
  except ValueError:
    raise ValueError(f"keep: got shape {k.shape}, expected a 0/1 map of one "
                     f"measurement's shape {event}") from None
  if not np.all((k == 0) | (k == 1)):
    raise ValueError("keep: got values other than 0 and 1, expected a 0/1 "
                     "map (0 on the held-out entries)")
  if not np.any(k == 0):
    raise ValueError("keep: holds no entry out (all 1), expected a 0 on at "
                     "least one entry (holdout_keep)")


def heldout_error(noise, y, fx, keep, mask=None):
  """Per example: the mean squared prediction error of the entries
  ``keep`` leaves out (0), ``(y - f(x̂) - μ)²`` over them, μ the noise's
  mean.  Only entries that are measurements count: ``mask`` is the
  operator's ``measurement_mask()`` (0 on rows past a Gaussian matrix's
  ``active`` count, or on entries ``operators.masked`` leaves out; None:
  every entry).  Counting the others would add the same noise-only term
  to every configuration's error and squeeze their differences in dB (at
  1-bit CS m = 100 of 3,200 rows, 0.95 dB between configurations read
  0.12)."""
  check_factorises(noise)
  if not isinstance(keep, jax.core.Tracer):
    _check_keep(keep, y)
  mean = noise_mean(noise)
  held = jnp.broadcast_to(1.0 - keep, jnp.shape(y))
  if mask is not None:
    held = held * jnp.broadcast_to(mask, jnp.shape(y))
    if not isinstance(held, jax.core.Tracer) and not bool(jnp.all(
        jnp.sum(held, axis=tuple(range(1, held.ndim))) > 0)):
      # Every configuration would score 0 error: a silent tie.
      raise ValueError(
          f"keep: no measured entry is held out ({int(jnp.sum(mask))} "
          f"measured of {int(np.prod(jnp.shape(mask)))}); expected a hold-out "
          "that leaves out some measured entries (more measurements, or a "
          "larger fraction)")
  r2 = jnp.square(y - fx - mean) * held
  axes = tuple(range(1, r2.ndim))
  return jnp.sum(r2, axis=axes) / jnp.maximum(jnp.sum(held, axis=axes), 1.0)


def estimate_noise_scale(unit_std, y, fx, keep, mean=0.0
                         ) -> NoiseScaleEstimate:
  """The scale s of noise ``N(mean, (s · unit_std)²)`` from held-out
  residuals ``r = y - f(x̂) - mean`` (x̂ fitted without them).

  On a held-out entry i, E[r_i²] = e_i + s² u_i², u = ``unit_std`` and
  e_i the prediction error.  With e_i ≈ e the same everywhere, ordinary
  least squares of r_i² on (1, u_i²) over every held-out entry of every
  example gives (e, s²): the noise's known *shape* is what separates it
  from the error.  With e < 0 fitted, e = 0 and s² = Σ u² r² / Σ u⁴.  A
  constant u (isotropic noise) leaves e and s² confounded: then e = 0 and
  s² = mean r² / u², an upper bound, flagged not identifiable (as when the
  fitted slope is not positive).  Where the MAP's error grows with the
  noise (a pixel predicted from equally noisy neighbours), part of it
  follows u² and ŝ comes out high (SINUSOIDAL, s = 0.2: ŝ = 0.243).
  """
  if np.ndim(y) < 2 or np.shape(fx) != np.shape(y):
    raise ValueError(f"fx: got shape {np.shape(fx)}, expected the "
                     f"measurements' shape {np.shape(y)} (a batch)")
  _check_keep(keep, y)
  try:
    u2 = np.broadcast_to(np.square(np.asarray(unit_std, np.float64)),
                         np.shape(y)[1:])
  except ValueError:
    raise ValueError(f"unit_std: got shape {np.shape(unit_std)}, expected "
                     f"one measurement's shape {np.shape(y)[1:]}") from None
  held = np.broadcast_to(np.asarray(keep) == 0, np.shape(y)[1:])
  for name, a in (("y", y), ("fx", fx), ("unit_std", unit_std)):
    if not np.all(np.isfinite(np.asarray(a))):
      raise ValueError(f"{name}: got non-finite entries; expected finite "
                       "measurements, predictions and std map")
  if not np.all(u2[held] > 0):
    raise ValueError(f"unit_std: got {int(np.sum(u2[held] <= 0))} held-out "
                     "entries of std 0, expected a positive std on every "
                     "held-out entry")
  r = np.asarray(y, np.float64) - np.asarray(fx, np.float64) - np.asarray(
      mean, np.float64)
  r2 = np.square(r)[:, held].ravel()
  v = np.broadcast_to(u2[held], (np.shape(y)[0],) + u2[held].shape).ravel()
  upper = NoiseScaleEstimate(float(np.sqrt(np.mean(r2) / np.mean(v))), 0.0,
                             False)
  spread = np.var(v)
  # A std map nearly constant over the held-out entries cannot separate the
  # error from the noise (the fit's slope would be noise itself).
  if spread <= 1e-6 * np.mean(v) ** 2:
    return upper
  s2 = float(np.mean((v - v.mean()) * (r2 - r2.mean())) / spread)
  e = float(r2.mean() - s2 * v.mean())
  if s2 <= 0.0:
    return upper  # residuals do not follow the noise's shape at all
  if e < 0.0:
    e, s2 = 0.0, float(np.sum(v * r2) / np.sum(v * v))
  return NoiseScaleEstimate(float(np.sqrt(s2)), e, True)


class RecorruptConfig(NamedTuple):
  """``alpha``: the recorruption's α (the fit is judged at 1 + α² times
  the noise variance); ``key``: the draw z (default ``PRNGKey(0)``);
  ``antithetic``: also fit with -z and average the two estimates (twice
  the fits; each is unbiased, and the check noise's ±z/α parts of their
  errors largely cancel: on a comparison of two denoisers, about half
  the standard deviation of one draw, where a second independent draw
  gives 1/√2)."""

  alpha: float = 0.5
  key: Optional[jax.Array] = None
  antithetic: bool = False


class Recorrupted(NamedTuple):
  """A split of Gaussian measurements (``recorrupt``): fit to ``y_fit``
  under ``noise_fit``, check against ``y_check``; ``offset`` is the
  per-entry mean of the check's noise power, σ² (1 + 1/α²), subtracted
  from the squared error."""

  y_fit: jax.Array
  y_check: jax.Array
  noise_fit: object
  offset: jax.Array
  mean: object


def gaussian_std(noise):
  """Per-entry std of Gaussian noise (``noise.gaussian_std``)."""
  return noise_lib.gaussian_std(
      noise, "recorrupting needs draws of the same noise")


def scaled_gaussian(noise, factor: float):
  """The same Gaussian noise with its std times ``factor`` (its mean
  kept)."""
  if hasattr(noise, "std_map"):
    return noise_lib.DiagonalGaussian(noise.std_map * factor,
                                      noise_mean(noise))
  std = gaussian_std(noise)
  if std.ndim:
    return noise_lib.DiagonalGaussian(std * factor, noise_mean(noise))
  return noise_lib.gaussian(float(std) * factor, noise.event_shape or None)


def recorrupt(noise, y, key, alpha: float = 0.5) -> Recorrupted:
  """Splits measurements ``y`` with Gaussian ``noise`` into a noisier
  ``y_fit = y + α z`` and an independent ``y_check = y - z / α``,
  z ~ N(0, diag σ²) drawn with ``key`` (see the module's docstring)."""
  if not (starts.is_real_number(alpha) and float(alpha) > 0
          and np.isfinite(float(alpha))):
    raise ValueError(f"alpha: got {alpha!r}, expected a positive number")
  std = gaussian_std(noise)
  y = starts.as_array(y, "y")
  ev = tuple(getattr(noise, "event_shape", ()) or ())
  if y.ndim < 2 or (ev and tuple(y.shape[1:]) != ev):
    raise ValueError(f"y: got shape {tuple(y.shape)}, expected a batch of "
                     f"measurements (B, {', '.join(map(str, ev)) or '...'})"
                     " that the noise fits")
  starts.check_finite(y, "y", "finite measurements")
  z = std * jax.random.normal(starts.check_key(key, "key"), y.shape)
  return Recorrupted(y + alpha * z, y - z / alpha,
                     scaled_gaussian(noise, float(np.sqrt(1 + alpha ** 2))),
                     jnp.broadcast_to(jnp.square(std) * (1 + alpha ** -2),
                                      y.shape[1:]),
                     noise_mean(noise))


def mirrored(split: Recorrupted, y) -> Recorrupted:
  """The antithetic split of ``split``: the same z with its sign
  flipped (``y_fit = y - α z``, ``y_check = y + z / α``)."""
  y = jnp.asarray(y)
  return split._replace(y_fit=2 * y - split.y_fit,
                        y_check=2 * y - split.y_check)


def recorrupted_error(split: Recorrupted, fx):
  """Per example: the estimate of ``mean_i (f(x̂)_i - f(x)_i)²`` from a MAP
  fitted to ``split.y_fit`` (``fx`` = f(x̂)); unbiased, so it may come out
  below 0 for a near-perfect fit."""
  r2 = jnp.square(split.y_check - fx - split.mean) - split.offset
  return jnp.mean(r2, axis=tuple(range(1, r2.ndim)))


def noise_log_density_rate(noise, examples):
  """``mean_j log p_Δ(δ_j) / d`` over noise-only ``examples`` (n, *event):
  the log-density per entry that real noise has under ``noise``."""
  return _log_density_rate(noise, examples, "examples")


def _log_density_rate(noise, examples, name):
  examples = starts.as_array(examples, name)
  shape = tuple(getattr(noise, "event_shape", ()) or examples.shape[1:])
  if examples.ndim != len(shape) + 1 or tuple(examples.shape[1:]) != shape:
    raise ValueError(f"{name}: got shape {examples.shape}, expected "
                     f"(n,) + the noise's event shape {shape}")
  if examples.shape[0] < 1:
    raise ValueError(f"{name}: got none, expected at least one noise-only "
                     "example")
  starts.check_finite(examples, name, "finite noise-only examples")
  d = float(np.prod(shape))
  return jnp.mean(noise.log_prob(examples)) / d


def residual_typicality(noise, y, fx, rate):
  """``| mean_i log p_Δ(y_i - f(x̂)_i) / d - rate |`` (nats per entry;
  smaller better): how far the residuals' log-density per entry is from
  real noise's ``rate`` (``noise_log_density_rate``); see the module's
  docstring.  ``y`` and ``fx`` are batches (B, *event)."""
  y, fx = jnp.asarray(y), jnp.asarray(fx)
  if y.shape != fx.shape:
    raise ValueError(f"fx: got shape {fx.shape}, expected y's {y.shape}")
  d = float(np.prod(y.shape[1:]))
  return jnp.abs(jnp.mean(noise.log_prob(y - fx)) / d - rate)


def _lowest_error(per):
  """Per-(β, example) errors with non-finite ones made worst; their mean
  over examples; the index of the smallest."""
  per = np.where(np.isfinite(per), per, np.inf)
  errors = per.mean(axis=1)
  return per, errors, int(np.argmin(errors))


def select_beta_recorrupted(y, *, prior, params, operator, noise, betas,
                            steps=100, optimizer=None, config=None,
                            recorrupting: Optional[RecorruptConfig] = None
                            ) -> HoldoutChoice:
  """The β among ``betas`` whose MAP, fitted to recorrupted measurements
  (``recorrupt``, with ``recorrupting``'s α and key), has the smallest
  estimated error (``recorrupted_error``, averaged over examples).  The
  MAP at the chosen β is then fitted to ``y`` itself.  ``keep`` is
  None."""
  from mapflow.solve import api
  if ops_lib.is_one_bit(operator):
    raise ValueError("operator: got a 1-bit operator, whose measurements "
                     "are signs, not Gaussian; use select_beta (held-out "
                     "rows)")
  y = starts.as_array(y, "y")
  rc = RecorruptConfig() if recorrupting is None else recorrupting
  split = recorrupt(noise, y, jax.random.PRNGKey(0) if rc.key is None
                    else rc.key, rc.alpha)
  per = 0.0
  splits = [split, mirrored(split, y)] if rc.antithetic else [split]
  for sp in splits:
    grid = api.sweep(sp.y_fit, prior=prior, params=params,
                     operator=operator, noise=sp.noise_fit, betas=betas,
                     steps=steps, optimizer=optimizer, config=config)
    per = per + np.stack([
        np.asarray(recorrupted_error(sp, operator(grid.x[i, 0])))
        for i in range(grid.x.shape[0])]) / len(splits)
  per, errors, best = _lowest_error(per)
  betas = np.atleast_1d(np.asarray(betas, np.float64))
  x = api.recover(y, prior=prior, params=params, operator=operator,
                  noise=noise, beta=float(betas[best]), steps=steps,
                  optimizer=optimizer, config=config).x
  return HoldoutChoice(float(betas[best]), errors, per, x, None)


def select_beta(y, *, prior, params, operator, noise, betas, steps=100,
                optimizer=None, config=None,
                holdout: Optional[HoldoutConfig] = None) -> HoldoutChoice:
  """The β among ``betas`` whose MAP, fitted without the held-out entries,
  best predicts them (smallest ``heldout_error``; ``mapflow.sweep`` over
  the betas in one program; ``config`` is its ``SolverConfig``)."""
  from mapflow.solve import api
  check_factorises(noise)
  y = starts.as_array(y, "y")
  if y.ndim < 2:
    raise ValueError(f"y: got shape {tuple(y.shape)}, expected a batch of "
                     "measurements (B, ...)")
  keep = holdout_keep(y.shape[1:], holdout)
  grid = api.sweep(y, prior=prior, params=params,
                   operator=ops_lib.masked(operator, keep), noise=noise,
                   betas=betas, steps=steps, optimizer=optimizer,
                   config=config)
  per = np.stack([np.asarray(heldout_error(
      noise, y, operator(grid.x[i, 0]), keep,
      getattr(operator, "measurement_mask", lambda: None)()))
                  for i in range(grid.x.shape[0])])
  per, errors, best = _lowest_error(per)
  betas = np.atleast_1d(np.asarray(betas, np.float64))
  return HoldoutChoice(float(betas[best]), errors, per, grid.x[best, 0], keep)


def select_beta_typical(y, *, prior, params, operator, noise,
                        noise_examples, betas, steps=100, optimizer=None,
                        config=None) -> HoldoutChoice:
  """The β among ``betas`` whose MAP's residuals are most typical of real
  noise (smallest ``residual_typicality`` against ``noise_examples``,
  noise-only examples the noise model did not train on): for noise that
  neither factorises nor can be redrawn, such as a flow's.  ``errors``
  (P,) are the gaps; ``per_example`` (P, B) each example's signed
  ``log p_Δ(r_i) / d - rate`` (the gap is the absolute value of their
  mean).  Nothing is held out: ``x`` is the chosen β's MAP fitted to y."""
  from mapflow.solve import api
  y = starts.as_array(y, "y")
  rate = _log_density_rate(noise, noise_examples, "noise_examples")
  grid = api.sweep(y, prior=prior, params=params, operator=operator,
                   noise=noise, betas=betas, steps=steps,
                   optimizer=optimizer, config=config)
  d = float(np.prod(y.shape[1:]))
  per = np.stack([np.asarray(noise.log_prob(y - operator(grid.x[i, 0])) / d
                             - rate) for i in range(grid.x.shape[0])])
  gaps = np.abs(per.mean(axis=1))
  gaps = np.where(np.isfinite(gaps), gaps, np.inf)
  best = int(np.argmin(gaps))
  betas = np.atleast_1d(np.asarray(betas, np.float64))
  return HoldoutChoice(float(betas[best]), gaps, per, grid.x[best, 0])


def select_beta_and_scale(y, *, prior, params, operator, unit_noise, betas,
                          steps=100, optimizer=None, config=None,
                          holdout: Optional[HoldoutConfig] = None):
  """β and the noise scale s from the measurements alone, when only the
  noise's shape ``unit_noise`` (its s = 1 member) is known.

  For Gaussian noise of std s·u the MAP objective times s² is
  ``Σ r²/(2u²) - β s² log p_G``: the MAP depends on β·s² alone.  So the
  held-out choice over ``betas`` at s = 1 (``select_beta``) already is the
  choice over every (β, s); its MAP's held-out residuals then give s
  (``estimate_noise_scale``).  Returns ``(choice, estimate)``; the β to use
  with the noise at scale ŝ is ``choice.beta / ŝ²``.
  """
  check_factorises(unit_noise)
  if np.any(np.asarray(noise_mean(unit_noise)) != 0.0):
    raise ValueError(
        "unit_noise: got a noise of non-zero mean, expected zero-mean "
        "noise (a mean that moves with s, as SINUSOIDAL-1D's shift, would "
        "make the MAP depend on s itself)")
  choice = select_beta(y, prior=prior, params=params, operator=operator,
                       noise=unit_noise, betas=betas, steps=steps,
                       optimizer=optimizer, config=config, holdout=holdout)
  unit_std = (unit_noise.sigma if hasattr(unit_noise, "sigma")
              else unit_noise.stddev())
  est = estimate_noise_scale(unit_std, y, operator(choice.x), choice.keep)
  return choice, est
