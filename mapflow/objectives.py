"""Losses, per example (batch leading, one value per example).

    map_loss   (paper eq. 12):  -log p_Δ(y - f(G(z))) - β log p_G(G(z)),
               log p_G(G(z)) = log N(z; 0, I) - log|det dG/dz|
    map_loss_x (same, over x):  -log p_Δ(y - f(x)) - β log p_G(x),
               log p_G extended outside the flow's support
               (``noise.box_extended_log_prob``)
    map_loss_noise (same, over the noise flow's latent w, f invertible):
               δ = G_Δ(w),  x = f⁻¹(y - δ),
               -log p_Δ(δ) - β log p_G(x),
               log p_Δ(δ) = log N(w; 0, I) - log|det dG_Δ/dw|
    asim_loss  (eq. 9):         ||y - f(G(z))||^2 + γ ||z||
    asim_loss_x (same, over x): ||y - f(x)||^2 + γ ||G⁻¹(x)||, with x
               clipped into the flow's box for G⁻¹ and a quadratic
               penalty outside it (``noise.box_clipped_inverse``)
    bora_loss  (eq. 4):         ||y - f(g(z))||^2 + λ ||z||^2

Entries the operator masks (rows beyond ``active``) count nowhere: the
measurement ``y`` is masked like ``f(x)``, and the noise leaves them out.
"""

from __future__ import annotations

import jax.numpy as jnp

from mapflow import noise as noise_lib


def _sum_but_batch(a):
  return jnp.sum(a, axis=tuple(range(1, a.ndim)))


def masked_residual(y, fx, operator):
  mask = operator.measurement_mask()
  r = y - fx
  return (r if mask is None else r * mask), mask


def map_loss(z, y, *, prior, params, operator, noise, beta):
  """Eq. 12 over latents ``z`` (B, H, W, C); returns (B,)."""
  x, logdet = prior.forward(params, z)
  r, mask = masked_residual(y, operator(x), operator)
  nll = -noise_lib.log_prob(noise, r, mask)
  log_prior = prior.base_log_prob(z) - logdet
  return nll - beta * log_prior


def map_loss_x(x, y, *, prior, params, operator, noise, beta):
  """Eq. 12 over images ``x`` (B, H, W, C) directly; returns (B,)."""
  r, mask = masked_residual(y, operator(x), operator)
  nll = -noise_lib.log_prob(noise, r, mask)
  # Extended past the prior's support, so a step out is pulled back rather
  # than undone.
  return nll - beta * noise_lib.box_extended_log_prob(prior, params, x)


def map_loss_noise(w, y, *, prior, params, operator, noise, beta):
  """Eq. 12 over the noise flow's latents ``w``; returns (B,).

  The same objective as ``map_loss`` at ``x = f⁻¹(y - G_Δ(w))``: for an
  invertible ``f`` the map ``w -> x`` is a bijection, so the minimisers
  agree.  The residual is on the noise flow's support by construction;
  ``x`` may leave the image prior's, whose log-density is extended as in
  ``noise.box_extended_log_prob``.
  """
  delta, log_p_noise = noise.latent_to_noise(w)
  x = operator.inverse(y - delta)
  return -log_p_noise - beta * noise_lib.box_extended_log_prob(
      prior, params, x)


def asim_loss(z, y, *, prior, params, operator, gamma):
  """Eq. 9, Asim et al.'s proxy: squared error + γ ||z|| (not squared)."""
  x, _ = prior.forward(params, z)
  r, _ = masked_residual(y, operator(x), operator)
  return _sum_but_batch(jnp.square(r)) + gamma * jnp.sqrt(
      _sum_but_batch(jnp.square(z)) + 1e-12)


def bora_loss(z, y, *, generator, operator, lam):
  """Eq. 4, Bora et al.: squared error + λ ||z||^2, any generator z -> x."""
  x = generator(z)
  r, _ = masked_residual(y, operator(x), operator)
  return _sum_but_batch(jnp.square(r)) + lam * _sum_but_batch(jnp.square(z))


def asim_loss_x(x, y, *, prior, params, operator, gamma, penalty=1e4):
  """Eq. 9 over images ``x`` directly: the same objective as ``asim_loss``
  at ``z = G⁻¹(x)`` inside the flow's support; outside it the latent of the
  clipped image is used and ``penalty * ||x - clip(x)||^2`` pulls x back."""
  z, excess = noise_lib.box_clipped_inverse(prior, params, x)
  r, _ = masked_residual(y, operator(x), operator)
  return (_sum_but_batch(jnp.square(r)) + gamma * jnp.sqrt(
      _sum_but_batch(jnp.square(z)) + 1e-12) + penalty * excess)
