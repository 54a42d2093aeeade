"""Bora et al.'s MNIST VAE: the generator of the Bora baseline.

Encoder 784-500-500-(2 x 20) and decoder 20-500-500-784, softplus hidden
units, Bernoulli pixel likelihood on images in [0, 1] (the decoder outputs
logits; ``decode`` returns ``sigmoid(logits)``).

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I))
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  image_shape: Tuple[int, int, int] = (28, 28, 1)
  hidden: Tuple[int, ...] = (500, 500)
  latent_dim: int = 20


class _MLP(nn.Module):
  sizes: Sequence[int]

  @nn.compact
  def __call__(self, h):
    for s in self.sizes[:-1]:
      h = nn.softplus(nn.Dense(s)(h))
    return nn.Dense(self.sizes[-1])(h)


class VAE(nn.Module):
  config: VAEConfig

  def setup(self):
    c = self.config
    d = math.prod(c.image_shape)
    self.encoder = _MLP(tuple(c.hidden) + (2 * c.latent_dim,))
    self.decoder = _MLP(tuple(c.hidden[::-1]) + (d,))

  def encode(self, x):
    out = self.encoder(x.reshape(x.shape[0], -1))
    mean, log_std = jnp.split(out, 2, axis=-1)
    return mean, log_std

  def decode_logits(self, z):
    return self.decoder(z).reshape(z.shape[:-1] + self.config.image_shape)

  def __call__(self, x, key):
    mean, log_std = self.encode(x)
    z = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return self.decode_logits(z), mean, log_std


def elbo(vae: VAE, params, x, key):
  """Per-example ELBO in nats (one reparametrised sample)."""
  logits, mean, log_std = vae.apply({"params": params}, x, key)
  ll = -jnp.sum(optax_sigmoid_bce(logits, x), axis=(1, 2, 3))
  kl = 0.5 * jnp.sum(jnp.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std, -1)
  return ll - kl


def optax_sigmoid_bce(logits, labels):
  """Bernoulli negative log-likelihood with soft labels in [0, 1]."""
  return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(
      jnp.exp(-jnp.abs(logits)))


def init(cfg: VAEConfig, key):
  vae = VAE(cfg)
  x = jnp.zeros((1,) + cfg.image_shape)
  return vae.init(key, x, key)["params"]


@functools.lru_cache(maxsize=16)
def decoder(cfg: VAEConfig):
  """``(params, z (latent_dim,)) -> x (H, W, C)`` in [0, 1]: the decoder's
  mean image.  Pass it to ``recover_bora`` with ``generator_params=params``,
  so the params are an argument of the compiled program, not constants in
  it (one compile serves any params).  Cached per config."""
  vae = VAE(cfg)

  def decode(params, z):
    logits = vae.apply({"params": params}, z[None], method=VAE.decode_logits)
    return jax.nn.sigmoid(logits[0])

  return decode


def generator(cfg: VAEConfig, params):
  """``z -> x``: ``decoder(cfg)`` with ``params`` fixed, for callers that
  want a plain generator.  Its params are baked into each compiled
  program; ``decoder`` with ``generator_params`` avoids that."""
  return functools.partial(decoder(cfg), params)
