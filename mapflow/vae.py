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


def train_vae(cfg: VAEConfig, x_train, x_test, workdir, steps: int,
              batch_size: int = 100, learning_rate: float = 1e-3,
              seed: int = 0, progress: bool = True):
  """Trains (or resumes) the VAE on uint8 images; returns (params, test_elbo).

  Same determinism as flow training: the batch and noise at step ``s`` are
  functions of ``(seed, s)``, so a resumed run equals an uninterrupted one.
  Images are scaled to [0, 1] (x / 255) and scored with the Bernoulli
  likelihood, as in Bora et al.
  """
  import json
  from pathlib import Path

  import numpy as np
  import optax

  from mapflow import checkpoint as ckpt
  from mapflow.training import batch_indices

  workdir = Path(workdir)
  vae = VAE(cfg)
  opt = optax.adam(learning_rate)
  params = init(cfg, jax.random.PRNGKey(seed))
  state = {"params": params, "opt_state": opt.init(params),
           "step": jnp.zeros((), jnp.int32)}
  if (workdir / "state").exists():
    state = ckpt.restore(workdir / "state", state)
  base = jax.random.PRNGKey(seed + 1)

  @jax.jit
  def step_fn(state, xb):
    key = jax.random.fold_in(base, state["step"])
    x = xb.astype(jnp.float32) / 255.0
    loss, g = jax.value_and_grad(
        lambda p: -jnp.mean(elbo(vae, p, x, key)))(state["params"])
    upd, os_ = opt.update(g, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], upd),
            "opt_state": os_, "step": state["step"] + 1}, loss

  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=steps, initial=int(state["step"]), desc="vae")
  s = int(state["step"])
  try:
    while s < steps:
      idx = batch_indices(s, len(x_train), batch_size, seed)
      state, loss = step_fn(state, jnp.asarray(x_train[idx]))
      s += 1
      if bar is not None:
        bar.update(1)
        if s % 50 == 0:
          bar.set_postfix(neg_elbo=f"{float(loss):.1f}")
      if s % 1000 == 0:
        ckpt.save(workdir / "state", state, cfg)
  finally:
    ckpt.save(workdir / "state", state, cfg)
    if bar is not None:
      bar.close()
  ev = jax.jit(lambda p, x, k: elbo(vae, p, x.astype(jnp.float32) / 255.0, k))
  key = jax.random.PRNGKey(seed + 2)
  vals = [ev(state["params"], jnp.asarray(x_test[i:i + 1000]),
             jax.random.fold_in(key, i))
          for i in range(0, len(x_test), 1000)]
  test_elbo = float(jnp.mean(jnp.concatenate(vals)))
  ckpt.save(workdir / "params", state["params"], cfg,
            {"step": s, "test_elbo_nats": test_elbo})
  ckpt.write_json_atomic(workdir / "eval.json",
                         {"step": s, "test_elbo_nats": test_elbo,
                          "num_test": int(len(x_test))})
  return state["params"], test_elbo
