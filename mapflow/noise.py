"""Noise densities ``p_Δ``: distrax distributions over one measurement.

``log_prob(delta)`` takes a batch of residuals (B, *event) and returns (B,).
The Gaussian models also have ``masked_log_prob(delta, mask)``, which counts
only entries with mask 1 (rows beyond a Gaussian operator's ``active``), and
expose ``std_map`` for plots.  Any other distrax distribution whose
``event_shape`` is the measurement's shape also works as noise.

Std maps (``s`` is the largest per-entry standard deviation):

    sinusoidal, image (H, W, C):  row k:  s * exp(sin(2 pi 4 k / H) - 1)
    radial, image (H, W, C):      s * exp(-0.005 (64 d / H)^2), d the
                                  distance to the centre ((H-1)/2, (W-1)/2)
    sinusoidal_1d, m entries:     entry i: s * exp(sin(2 pi i / 16) - 1),
                                  with mean ``shift`` (0.5 s by default)
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import distrax
import jax
import jax.numpy as jnp
import numpy as np


def _sum_event(x, event_ndims):
  if event_ndims == 0:
    return x
  return jnp.sum(x, axis=tuple(range(-event_ndims, 0)))


def _check_event(value, event, what="value"):
  """A residual whose trailing axes are not the noise's event shape would
  broadcast against the std map: a wrong density, silently."""
  tail = tuple(jnp.shape(value)[-len(event):]) if event else ()
  try:
    fits = jnp.ndim(value) >= len(event) and tuple(
        np.broadcast_shapes(tail, tuple(event))) == tail
  except ValueError:
    fits = False
  if event and not fits:
    raise ValueError(f"{what}: got shape {tuple(jnp.shape(value))}, "
                     f"expected (..., {', '.join(map(str, event))}) (the "
                     "noise's event shape)")


def _normal_logpdf(r, mean, std):
  return (-0.5 * jnp.square((r - mean) / std) - jnp.log(std)
          - 0.5 * math.log(2 * math.pi))


class DiagonalGaussian(distrax.Distribution):
  """Independent Gaussian entries: ``delta ~ N(mean, diag(std^2))``.

  log p(delta) = sum_i [-(delta_i - mean_i)^2 / (2 std_i^2) - log std_i
                        - log(2 pi) / 2]
  """

  def __init__(self, std, mean=0.0):
    self._std = jnp.asarray(std, jnp.float32)
    self._mean = jnp.broadcast_to(jnp.asarray(mean, jnp.float32),
                                  self._std.shape)

  @property
  def event_shape(self):
    return tuple(self._std.shape)

  @property
  def std_map(self):
    return self._std

  @property
  def mean_map(self):
    return self._mean

  def log_prob(self, value):
    _check_event(value, self.event_shape)
    lp = _normal_logpdf(value, self._mean, self._std)
    return _sum_event(lp, len(self.event_shape))

  def masked_log_prob(self, value, mask):
    _check_event(value, self.event_shape)
    _check_event(mask, self.event_shape, "mask")
    lp = _normal_logpdf(value, self._mean, self._std) * mask
    return _sum_event(lp, len(self.event_shape))

  def _sample_n(self, key, n):
    eps = jax.random.normal(key, (n,) + self.event_shape)
    return self._mean + self._std * eps

  def mean(self):
    return self._mean

  def stddev(self):
    return self._std


class IsotropicGaussian(distrax.Distribution):
  """iid ``N(0, sigma^2)`` entries in a residual of any shape.

  ``log_prob`` sums over every axis but the first (the batch).  ``shape``
  is needed only to ``sample``.
  """

  def __init__(self, sigma, shape: Optional[Sequence[int]] = None):
    self._sigma = jnp.asarray(sigma, jnp.float32)
    self._shape = None if shape is None else tuple(shape)

  @property
  def event_shape(self):
    return self._shape if self._shape is not None else ()

  @property
  def sigma(self):
    return self._sigma

  def log_prob(self, value):
    _check_event(value, self.event_shape)
    lp = _normal_logpdf(value, 0.0, self._sigma)
    return jnp.sum(lp, axis=tuple(range(1, lp.ndim))) if lp.ndim > 1 else lp

  def masked_log_prob(self, value, mask):
    _check_event(value, self.event_shape)
    lp = _normal_logpdf(value, 0.0, self._sigma) * mask
    return jnp.sum(lp, axis=tuple(range(1, lp.ndim))) if lp.ndim > 1 else lp

  def _sample_n(self, key, n):
    if self._shape is None:
      raise ValueError("gaussian(sigma): sampling needs shape=, the shape of "
                       "one measurement")
    return self._sigma * jax.random.normal(key, (n,) + self._shape)


def _logit_box(prior, margin):
  """The pixel box a flow with logit preprocessing supports, shrunk by
  ``margin``; None for flows defined everywhere."""
  a = getattr(prior.config, "logit_alpha", None)
  if a is None:
    return None
  lo, hi = -a / (1 - 2 * a), (1 - a) / (1 - 2 * a)
  return lo + margin, hi - margin


def box_extended_log_prob(prior, params, x, penalty: float = 1e4,
                          margin: float = 1e-3):
  """A flow's ``log p_G(x)``, extended continuously outside its support.

  A RealNVP's pixel space is a bounded box (its logit preprocessing needs
  ``a + (1 - 2a) x`` in (0, 1)); outside it the density is zero and its
  log is not finite.  An iterate that stepped outside would stay there (the
  solver skips non-finite steps), so outside a box slightly inside the
  support:

      log p(x) := log p_G(c(x)) - penalty * ||x - c(x)||^2

  with ``c`` the clip to the box.  Inside the box this is exactly
  ``log p_G``; outside, its gradient points back in.  Flows without a box
  return ``log p_G(x)`` unchanged.
  """
  box = _logit_box(prior, margin)
  if box is None:
    return prior.log_prob(params, x)
  inside = jnp.clip(x, *box)
  excess = jnp.sum(jnp.square(x - inside), axis=(-3, -2, -1))
  return prior.log_prob(params, inside) - penalty * excess


def box_clipped_inverse(prior, params, x, margin: float = 1e-3):
  """``(z, excess)``: the flow's latent of ``c(x)``, ``c`` the clip to the
  box of ``box_extended_log_prob``, and ``||x - c(x)||^2`` per example
  (0 for flows without a box).  Lets a loss over pixels that needs
  ``G^{-1}(x)`` (Asim et al.'s, moved in pixel space) stay finite outside
  the prior's support and add a penalty that pulls ``x`` back."""
  box = _logit_box(prior, margin)
  if box is None:
    return prior.inverse(params, x)[0], jnp.zeros(x.shape[:1], x.dtype)
  inside = jnp.clip(x, *box)
  excess = jnp.sum(jnp.square(x - inside), axis=(-3, -2, -1))
  return prior.inverse(params, inside)[0], excess


class FlowNoise(distrax.Distribution):
  """Noise whose density is a flow's: ``log p(delta) = log p_G(delta)``,
  extended outside the flow's support as in ``box_extended_log_prob``.

  The flow's latent ``w`` also parametrises the noise directly:
  ``latent_to_noise(w)`` gives ``delta = G(w)`` and

      log p(delta) = log N(w; 0, I) - log|det dG/dw|,

  always inside the support (``parametrization="noise"`` of ``recover``).
  """

  def __init__(self, prior, params, penalty: float = 1e4,
               margin: float = 1e-3):
    self._prior, self._params = prior, params
    self._penalty, self._margin = penalty, margin

  @property
  def event_shape(self):
    return tuple(self._prior.config.image_shape)

  @property
  def flow(self):
    return self._prior

  @property
  def params(self):
    return self._params

  def log_prob(self, value):
    return box_extended_log_prob(self._prior, self._params, value,
                                 self._penalty, self._margin)

  def latent_to_noise(self, w):
    """``(delta, log p(delta))`` for latents ``w`` (B, *event)."""
    delta, logdet = self._prior.forward(self._params, w)
    return delta, self._prior.base_log_prob(w) - logdet

  def noise_to_latent(self, delta):
    """The latent of ``delta`` clipped into the support's box."""
    box = _logit_box(self._prior, self._margin)
    if box is not None:
      delta = jnp.clip(delta, *box)
    return self._prior.inverse(self._params, delta)[0]

  def _sample_n(self, key, n):
    return self._prior.sample(self._params, key, n)


def gaussian(sigma: float, shape=None) -> IsotropicGaussian:
  """iid ``N(0, sigma^2)``; fits any residual shape."""
  _check_scale(sigma, "sigma")
  return IsotropicGaussian(sigma, shape)


def _check_scale(scale, name: str = "scale"):
  """A positive finite number (traced ones pass)."""
  if isinstance(scale, jax.core.Tracer):
    return
  try:
    ok = math.isfinite(float(scale)) and float(scale) > 0
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(f"{name}: got {scale!r}, expected a positive finite "
                     "number")


def diagonal(std_map, mean=0.0) -> DiagonalGaussian:
  """Independent Gaussian noise with a per-entry std map (any shape)."""
  if not isinstance(std_map, jax.core.Tracer):
    std = np.asarray(std_map, np.float64)
    bad = int(np.sum(~(np.isfinite(std) & (std > 0))))
    if bad:
      raise ValueError(f"std_map: got {bad} entries that are not positive "
                       "and finite, expected a std > 0 everywhere (a std of "
                       "0 makes the density infinite)")
  return DiagonalGaussian(std_map, mean)


def sinusoidal_std_map(shape, scale: float):
  """Row k of an (H, W, C) image: ``scale * exp(sin(2 pi 4 k / H) - 1)``."""
  _check_scale(scale)
  h, w, c = shape
  k = jnp.arange(h, dtype=jnp.float32)
  row = scale * jnp.exp(jnp.sin(2 * jnp.pi * 4 * k / h) - 1.0)
  return jnp.broadcast_to(row[:, None, None], (h, w, c))


def radial_std_map(shape, scale: float):
  """``scale * exp(-0.005 (64 d / H)^2)``, d the distance to the centre."""
  _check_scale(scale)
  h, w, c = shape
  i, j = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                      jnp.arange(w, dtype=jnp.float32), indexing="ij")
  d = jnp.sqrt((i - (h - 1) / 2) ** 2 + (j - (w - 1) / 2) ** 2)
  m = scale * jnp.exp(-0.005 * (64.0 * d / h) ** 2)
  return jnp.broadcast_to(m[..., None], (h, w, c))


def sinusoidal_1d_std_map(m: int, scale: float):
  """Entry i of m: ``scale * exp(sin(2 pi i / 16) - 1)``."""
  _check_scale(scale)
  i = jnp.arange(m, dtype=jnp.float32)
  return scale * jnp.exp(jnp.sin(2 * jnp.pi * i / 16.0) - 1.0)


def sinusoidal(shape, scale: float) -> DiagonalGaussian:
  """SINUSOIDAL noise on images (paper 5.4.2): ``sinusoidal_std_map``."""
  return DiagonalGaussian(sinusoidal_std_map(tuple(shape), scale))


def radial(shape, scale: float) -> DiagonalGaussian:
  """RADIAL noise on images (paper 5.4.3): ``radial_std_map``."""
  return DiagonalGaussian(radial_std_map(tuple(shape), scale))


def sinusoidal_1d(m: int, scale: float, shift: Optional[float] = None):
  """Noise for 1-bit CS: ``N(shift, sinusoidal_1d_std_map(m, scale)^2)``.

  ``shift`` defaults to ``0.5 * scale`` (positive mean, as in the paper).
  Rows beyond an operator's ``active`` are left out through
  ``masked_log_prob``.
  """
  shift = 0.5 * scale if shift is None else shift
  return DiagonalGaussian(sinusoidal_1d_std_map(m, scale), shift)


def from_flow(prior, params, penalty: float = 1e4,
              margin: float = 1e-3) -> FlowNoise:
  """Structured noise with a flow's density (e.g. handwritten digits).

  ``penalty`` and ``margin`` set how ``log_prob`` is extended past the
  flow's pixel box (``box_extended_log_prob``): a quadratic pull of weight
  ``penalty`` back into the box shrunk by ``margin``.
  """
  if not (np.isfinite(penalty) and penalty > 0):
    raise ValueError(f"penalty: got {penalty!r}, expected a positive number")
  box = _logit_box(prior, 0.0)
  widest = np.inf if box is None else 0.5 * (box[1] - box[0])
  if not (np.isfinite(margin) and 0 <= margin < widest):
    raise ValueError(f"margin: got {margin!r}, expected a number in "
                     f"[0, {widest:g}) (less than half the pixel box)")
  return FlowNoise(prior, params, float(penalty), float(margin))


def gaussian_std(noise, purpose: str = ""):
  """Per-entry std of Gaussian noise (``std_map``, an isotropic ``sigma``,
  or a distrax ``MultivariateNormalDiag``'s ``scale_diag`` or
  ``Independent(Normal)``'s ``scale``); raises ValueError naming the noise
  otherwise (``purpose``: why the caller needs it, for the message)."""
  if hasattr(noise, "std_map"):
    return jnp.asarray(noise.std_map)
  if isinstance(noise, IsotropicGaussian):
    return jnp.asarray(noise.sigma)
  # distrax's own independent Gaussians over one measurement.
  if isinstance(noise, distrax.MultivariateNormalDiag) or (
      isinstance(noise, distrax.Independent)
      and isinstance(noise.distribution, distrax.Normal)):
    if tuple(noise.batch_shape):
      raise ValueError(
          f"noise: got a {type(noise).__name__} of batch shape "
          f"{tuple(noise.batch_shape)} and event shape "
          f"{tuple(noise.event_shape)}, expected one measurement's density "
          "(batch shape (); with distrax.Independent, raise "
          "reinterpreted_batch_ndims to cover the measurement)")
    scale = (noise.scale_diag if isinstance(
        noise, distrax.MultivariateNormalDiag) else noise.distribution.scale)
    return jnp.broadcast_to(scale, noise.event_shape)
  raise ValueError(
      f"noise: got {type(noise).__name__}, expected Gaussian noise of known "
      "std (mapflow.noise.gaussian, diagonal, sinusoidal, radial, "
      "sinusoidal_1d; distrax.MultivariateNormalDiag, or distrax.Independent "
      f"of a distrax.Normal){': ' + purpose if purpose else ''}")


def log_prob(noise, residual, mask=None):
  """``log p_Δ(residual)`` per example, counting only entries with mask 1."""
  if mask is None:
    return noise.log_prob(residual)
  if hasattr(noise, "masked_log_prob"):
    return noise.masked_log_prob(residual, mask)
  raise ValueError(
      f"noise: a {type(noise).__name__} cannot leave out masked measurement "
      "rows (the operator has active < m); use a mapflow.noise model, or an "
      "operator without `active`")
