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

An ``Objective`` is one of these as a value a solver takes
(``mapflow.minimize``): a per-example loss over the variable it moves,
``loss(v, y, data) -> (B,)``, and the map from that variable to images.
``data`` is a dict pytree of everything else (params, operator, noise and
weights such as ``beta``), traced, so changing it never recompiles.  The
factories below build the paper's objectives; any function of the same
shape is an objective too.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp

from mapflow import noise as noise_lib
from mapflow import operators as ops_lib


def _sum_but_batch(a):
  return jnp.sum(a, axis=tuple(range(1, a.ndim)))


def masked_residual(y, fx, operator):
  mask = operator.measurement_mask()
  r = y - fx
  return (r if mask is None else r * mask), mask


def map_loss(z, y, *, prior, params, operator, noise, beta):
  """Eq. 12 over latents ``z`` (B, H, W, C); returns (B,)."""
  return map_loss_and_image(z, y, prior=prior, params=params,
                            operator=operator, noise=noise, beta=beta)[0]


def map_loss_and_image(z, y, *, prior, params, operator, noise, beta):
  """``(map_loss, G(z))``: the loss and the images it computed on the way."""
  x, logdet = prior.forward(params, z)
  r, mask = masked_residual(y, operator(x), operator)
  nll = -noise_lib.log_prob(noise, r, mask)
  log_prior = prior.base_log_prob(z) - logdet
  return nll - beta * log_prior, x


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
  return map_loss_noise_and_image(w, y, prior=prior, params=params,
                                  operator=operator, noise=noise,
                                  beta=beta)[0]


def map_loss_noise_and_image(w, y, *, prior, params, operator, noise, beta):
  """``(map_loss_noise, x)``, ``x = f⁻¹(y - G_Δ(w))`` the images it
  computed on the way."""
  delta, log_p_noise = noise.latent_to_noise(w)
  x = operator.inverse(y - delta)
  return -log_p_noise - beta * noise_lib.box_extended_log_prob(
      prior, params, x), x


def asim_loss(z, y, *, prior, params, operator, gamma):
  """Eq. 9, Asim et al.'s proxy: squared error + γ ||z|| (not squared)."""
  return asim_loss_and_image(z, y, prior=prior, params=params,
                             operator=operator, gamma=gamma)[0]


def asim_loss_and_image(z, y, *, prior, params, operator, gamma):
  """``(asim_loss, G(z))``: the loss and the images it computed."""
  x, _ = prior.forward(params, z)
  r, _ = masked_residual(y, operator(x), operator)
  return _sum_but_batch(jnp.square(r)) + gamma * jnp.sqrt(
      _sum_but_batch(jnp.square(z)) + 1e-12), x


def bora_loss(z, y, *, generator, operator, lam):
  """Eq. 4, Bora et al.: squared error + λ ||z||^2, any generator z -> x."""
  return bora_loss_and_image(z, y, generator=generator, operator=operator,
                             lam=lam)[0]


def bora_loss_and_image(z, y, *, generator, operator, lam):
  """``(bora_loss, g(z))``: the loss and the images it computed."""
  x = generator(z)
  r, _ = masked_residual(y, operator(x), operator)
  return (_sum_but_batch(jnp.square(r)) + lam * _sum_but_batch(
      jnp.square(z)), x)


def asim_loss_x(x, y, *, prior, params, operator, gamma, penalty=1e4):
  """Eq. 9 over images ``x`` directly: the same objective as ``asim_loss``
  at ``z = G⁻¹(x)`` inside the flow's support; outside it the latent of the
  clipped image is used and ``penalty * ||x - clip(x)||^2`` pulls x back."""
  z, excess = noise_lib.box_clipped_inverse(prior, params, x)
  r, _ = masked_residual(y, operator(x), operator)
  return (_sum_but_batch(jnp.square(r)) + gamma * jnp.sqrt(
      _sum_but_batch(jnp.square(z)) + 1e-12) + penalty * excess)



class Objective(NamedTuple):
  """A problem a solver minimises, one value per example.

  Attributes:
    loss: ``(v, y, data) -> (B,)``, pure: ``jit``, ``grad`` and ``vmap``
      apply.  ``v`` is the variable moved (B, *variable), ``y`` the
      measurements (B, ...), ``data`` a dict pytree.
    to_image: ``(v, y, data) -> x`` (B, *image_shape), the images ``v``
      stands for.
    variable: one example's variable shape, or ``"measurement"`` for the
      measurement's shape (a noise latent).
    image_shape: one image's shape.
    from_image: ``(x, y, data) -> v``, the variable of images ``x`` (the
      measurement start needs it); None if there is none.
    from_latent: ``(z, y, data) -> v``, the variable of flow latents ``z``
      (the zeros and random starts draw ``z``); None: ``v = z``.

  A ``loss`` made by ``loss_from`` also carries ``loss_and_image``, the loss
  and the images ``to_image`` would give, from one pass (a solver that
  wants both runs the flow's forward once; XLA does not always merge two
  separate ones).  Solvers use it only while neither ``loss`` nor
  ``to_image`` has been replaced (``images_with_loss``).
  """

  loss: Callable
  to_image: Callable
  variable: Union[Tuple[int, ...], str]
  image_shape: Tuple[int, ...]
  from_image: Optional[Callable] = None
  from_latent: Optional[Callable] = None


def data_operator(data):
  """``data["operator"]`` with rows at or beyond ``data["active"]`` masked
  (a sweep over m); the operator itself when there is no ``"active"``."""
  op, active = data["operator"], data.get("active")
  return op if active is None else ops_lib.with_active(op, active)


@functools.lru_cache(maxsize=None)
def _flow_maps(prior):
  """``(z -> x, x -> z)`` of a flow as objective maps (shared by every
  objective over that flow, so their compiled forms are too)."""
  def forward(z, y, d):
    return prior.forward(d["params"], z)[0]

  def inverse(x, y, d):
    return prior.inverse(d["params"], x)[0]
  return forward, inverse


def _identity(v, y, d):
  return v


def loss_from(loss_and_image: Callable, to_image: Callable) -> Callable:
  """The per-example loss of ``loss_and_image(v, y, data) -> (loss, x)``,
  carrying it as its ``loss_and_image`` attribute (see ``Objective``);
  ``x`` must be what ``to_image`` gives, and is used only while the
  objective's ``to_image`` is this one."""
  def loss(v, y, data):
    return loss_and_image(v, y, data)[0]
  loss.loss_and_image = loss_and_image
  loss.to_image = to_image
  return loss


def images_with_loss(objective: "Objective") -> Optional[Callable]:
  """The objective's ``loss_and_image``, if its loss carries one made for
  its own ``to_image`` (either field replaced: None)."""
  fn = getattr(objective.loss, "loss_and_image", None)
  if fn is None or getattr(objective.loss, "to_image",
                           None) is not objective.to_image:
    return None
  return fn


def map_objective(prior, parametrization: str = "z") -> Objective:
  """Eq. 12 as an objective; ``data``: params, operator, noise, beta.

  ``parametrization`` is what moves: "z" (the image latent), "x" (the
  image; ``map_loss_x``) or "noise" (the noise flow's latent w, with
  ``x = f⁻¹(y - G_Δ(w))``; ``map_loss_noise``).  One object per (prior,
  parametrization), so solvers reuse compiled code.
  """
  return _map_objective(prior, parametrization)


@functools.lru_cache(maxsize=None)
def _map_objective(prior, parametrization):
  forward, inverse = _flow_maps(prior)
  shape = tuple(prior.config.image_shape)
  if parametrization == "z":
    def loss_and_image(z, y, d):
      return map_loss_and_image(z, y, prior=prior, params=d["params"],
                                operator=data_operator(d), noise=d["noise"],
                                beta=d["beta"])
    return Objective(loss_from(loss_and_image, forward), forward, shape,
                     shape, inverse)
  if parametrization == "x":
    def loss(x, y, d):
      return map_loss_x(x, y, prior=prior, params=d["params"],
                        operator=data_operator(d), noise=d["noise"],
                        beta=d["beta"])
    return Objective(loss, _identity, shape, shape, _identity, forward)
  if parametrization == "noise":
    def loss_and_image(w, y, d):
      return map_loss_noise_and_image(
          w, y, prior=prior, params=d["params"], operator=data_operator(d),
          noise=d["noise"], beta=d["beta"])

    def to_image(w, y, d):
      return d["operator"].inverse(y - d["noise"].latent_to_noise(w)[0])

    def from_image(x, y, d):
      return d["noise"].noise_to_latent(y - d["operator"](x))
    return Objective(loss_from(loss_and_image, to_image), to_image,
                     "measurement", shape, from_image)
  raise ValueError(f"parametrization: got {parametrization!r}, expected "
                   "one of ('z', 'x', 'noise')")


def asim_objective(prior, parametrization: str = "z") -> Objective:
  """Asim et al.'s loss (eq. 9); ``data``: params, operator, gamma.
  ``parametrization``: "z" (the latent) or "x" (the image,
  ``asim_loss_x``).  One object per (prior, parametrization)."""
  return _asim_objective(prior, parametrization)


@functools.lru_cache(maxsize=None)
def _asim_objective(prior, parametrization):
  forward, inverse = _flow_maps(prior)
  shape = tuple(prior.config.image_shape)
  if parametrization == "z":
    def loss_and_image(z, y, d):
      return asim_loss_and_image(z, y, prior=prior, params=d["params"],
                                 operator=data_operator(d), gamma=d["gamma"])
    return Objective(loss_from(loss_and_image, forward), forward, shape,
                     shape, inverse)
  if parametrization == "x":
    def loss(x, y, d):
      return asim_loss_x(x, y, prior=prior, params=d["params"],
                         operator=data_operator(d), gamma=d["gamma"])
    return Objective(loss, _identity, shape, shape, _identity, forward)
  raise ValueError(f"parametrization: got {parametrization!r}, expected "
                   "one of ('z', 'x')")


def bora_objective(generator, latent_shape: Tuple[int, ...],
                   image_shape: Tuple[int, ...],
                   with_params: bool = True) -> Objective:
  """Bora et al.'s loss (eq. 4) for a per-example generator, ``g(params,
  z)`` (``with_params``, params in ``data["params"]``) or ``g(z)``;
  ``data``: params, operator, lam.  One object per generator and shapes."""
  return _bora_objective(generator, tuple(latent_shape), tuple(image_shape),
                         bool(with_params))


@functools.lru_cache(maxsize=None)
def _bora_objective(generator, latent_shape, image_shape, with_params):
  def batched(z, d):
    if with_params:
      return jax.vmap(generator, in_axes=(None, 0))(d["params"], z)
    return jax.vmap(generator)(z)

  def loss_and_image(z, y, d):
    return bora_loss_and_image(z, y, generator=lambda zz: batched(zz, d),
                               operator=data_operator(d), lam=d["lam"])

  def to_image(z, y, d):
    return batched(z, d)
  return Objective(loss_from(loss_and_image, to_image), to_image,
                   tuple(latent_shape), tuple(image_shape))
