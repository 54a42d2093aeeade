"""The ``Flow`` type: a flow prior as a NamedTuple of pure functions.

A flow is a chain of data-direction layers ``F = f_n o ... o f_1`` (the first
layer is the pixel preprocessing) and a standard normal base on a latent of
exactly the image's shape.  The generator is ``G = F^{-1}``:

    x = G(z),  z ~ N(0, I)
    log p_G(x) = log N(F(x); 0, I) + log|det dF/dx|          (change of variables)
    log p_G(G(z)) = log N(z; 0, I) - log|det dG/dz|

``log_prob`` is the density of pixel-space ``x`` in [0, 1]^d, preprocessing
included.  For ``num_bits``-bit data dequantised uniformly,
``x = (k + u) / 2^n`` with ``k`` the integer pixel and ``u ~ U[0, 1)``, the
discrete log-likelihood is ``log p_G(x) - d n log 2``, hence
``bits/dim = -log p_G(x) / (d log 2) + n``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import distrax
import jax
import jax.numpy as jnp

from mapflow.flows.base import ChainSpec


class Flow(NamedTuple):
  """A flow prior; every field but ``config`` is a pure function.

  Attributes:
    config: the frozen config the flow was built from.
    init: ``(key, x_batch) -> params``; ``x_batch`` (N, H, W, C) in [0, 1]
      drives the data-dependent init (ActNorm).
    forward: ``(params, z) -> (x, log|det dG/dz|)``.
    inverse: ``(params, x) -> (z, log|det dG^{-1}/dx|)``.
    log_prob: ``(params, x) -> log p_G(x)``, one value per example.
    sample: ``(params, key, n, temperature=1.0) -> x`` of shape (n, H, W, C).
    distribution: ``params -> distrax.Transformed`` over images.
    bits_per_dim: ``(params, x_uint8, key=None) -> bits/dim`` per example.
    bijector: ``params -> distrax.Bijector``, the generator ``G``.
    base_log_prob: ``z -> log N(z; 0, I)`` per example.
  """

  config: Any
  init: Callable
  forward: Callable
  inverse: Callable
  log_prob: Callable
  sample: Callable
  distribution: Callable
  bits_per_dim: Callable
  bijector: Callable
  base_log_prob: Callable


def standard_normal_log_prob(z):
  """log N(z; 0, I) summed over the last three axes."""
  d = math.prod(z.shape[-3:])
  return (-0.5 * jnp.sum(jnp.square(z), axis=(-3, -2, -1))
          - 0.5 * d * math.log(2 * math.pi))


def quantize(x_uint8, num_bits: int):
  """8-bit integers to ``num_bits``-bit integers (drops low bits)."""
  if not 1 <= num_bits <= 8:
    raise ValueError(f"num_bits: got {num_bits}, expected 1..8")
  dtype = jnp.result_type(x_uint8)
  if not jnp.issubdtype(dtype, jnp.integer):
    # Images already in [0, 1] would read as level 0: a silent wrong
    # density.
    raise ValueError(f"x_uint8: got {dtype} values, expected the data's "
                     "8-bit integers 0..255 (dequantize maps them to "
                     "[0, 1])")
  return jnp.floor(jnp.asarray(x_uint8, jnp.float32) / 2 ** (8 - num_bits))


def dequantize(x_uint8, num_bits: int, key=None):
  """``x = (k + u) / 2^n`` in [0, 1]; ``u ~ U[0,1)`` with a key, else 0.5."""
  k = quantize(x_uint8, num_bits)
  u = 0.5 if key is None else jax.random.uniform(key, k.shape)
  return (k + u) / 2 ** num_bits


def _init_key(key):
  """Re-keys init onto the "unsafe_rbg" PRNG.

  Weight init draws many arrays; threefry's hash made a deep flow's init
  compile about 4x slower on XLA:CPU (16 s against 4 s at 32x32x3, 6 scales).
  The draws stay a deterministic function of ``key``.
  """
  d = jax.random.key_data(key).reshape(-1)
  d = jnp.concatenate([d, d ^ jnp.uint32(0x9E3779B9)])[:4]
  if d.shape[0] < 4:
    d = jnp.concatenate([d, d])[:4]
  return jax.random.wrap_key_data(d, impl="unsafe_rbg")


def _densities(forward, inverse, shape, num_bits):
  """``log_prob``, ``sample`` and ``bits_per_dim`` of a flow given its
  ``forward`` (z -> x, log-det) and ``inverse`` (x -> z, log-det)."""
  dim = math.prod(shape)

  def log_prob(params, x):
    z, ld = inverse(params, x)
    return standard_normal_log_prob(z) + ld

  def sample(params, key, n, temperature: float = 1.0):
    z = temperature * jax.random.normal(key, (n,) + shape)
    return forward(params, z)[0]

  def bits_per_dim(params, x_uint8, key: Optional[jax.Array] = None):
    x = dequantize(x_uint8, num_bits, key)
    return -log_prob(params, x) / (dim * math.log(2.0)) + num_bits

  return log_prob, sample, bits_per_dim


def make_flow(config, specs: Sequence, image_shape, num_bits: int) -> Flow:
  """Builds a ``Flow`` from data-direction layer specs (see ``base``)."""
  shape = tuple(int(s) for s in image_shape)
  chain = ChainSpec(specs)
  # Init walks every layer once; compiled, it avoids op-by-op dispatch.
  chain_init = jax.jit(lambda key, x: chain.init(_init_key(key), x))

  def _check(name, x):
    if tuple(x.shape[-3:]) != shape:
      raise ValueError(
          f"{name}: got trailing shape {tuple(x.shape[-3:])} (full shape "
          f"{tuple(x.shape)}), expected (..., {', '.join(map(str, shape))}) "
          f"for this {type(config).__name__}")

  def init(key, x_batch):
    x_batch = jnp.asarray(x_batch, jnp.float32)
    _check("x_batch", x_batch)
    if x_batch.ndim != 4:
      raise ValueError(f"x_batch: got shape {x_batch.shape}, expected a "
                       f"batch (N, {', '.join(map(str, shape))})")
    return chain_init(key, x_batch)

  def bijector(params):
    return distrax.Inverse(chain.build(params))

  def forward(params, z):
    _check("z", z)
    return bijector(params).forward_and_log_det(z)

  def inverse(params, x):
    _check("x", x)
    return chain.build(params).forward_and_log_det(x)

  log_prob, sample, bits_per_dim = _densities(forward, inverse, shape,
                                              num_bits)

  def distribution(params):
    base = distrax.Independent(
        distrax.Normal(jnp.zeros(shape), jnp.ones(shape)),
        reinterpreted_batch_ndims=3)
    return distrax.Transformed(base, bijector(params))

  return Flow(config=config, init=init, forward=forward, inverse=inverse,
              log_prob=log_prob, sample=sample, distribution=distribution,
              bits_per_dim=bits_per_dim, bijector=bijector,
              base_log_prob=standard_normal_log_prob)


def default_scan(flag: Optional[bool]) -> bool:
  """Scanned stacking unless on CPU, where unrolled measured faster."""
  if flag is not None:
    return bool(flag)
  return jax.default_backend() != "cpu"


def with_compute_dtype(flow: Flow, dtype) -> Flow:
  """The same flow computing its layers in ``dtype`` (e.g. ``bfloat16``).

  Mixed precision: ``forward`` and ``inverse`` cast the floating params and
  the input to ``dtype`` on entry and cast their outputs (the image or the
  latent, and the log-determinant) back to float32, so an optimiser's
  variables and the noise term stay float32.  ``log_prob``, ``sample`` and
  ``bits_per_dim`` go through these; ``init``, ``bijector`` and
  ``distribution`` are the float32 originals.  The log-determinant is summed
  over layers in ``dtype``, so its value (not only its gradient) loses
  precision: measure the effect on the task (``bench``'s precision
  section) before relying on it.
  """
  dtype = jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"dtype: got {dtype}, expected a floating dtype")

  def cast(tree, to):
    return jax.tree_util.tree_map(
        lambda a: a.astype(to) if jnp.issubdtype(jnp.result_type(a),
                                                 jnp.floating) else a, tree)

  def run(fn):
    def wrapped(params, v):
      out, ld = fn(cast(params, dtype), jnp.asarray(v).astype(dtype))
      return out.astype(jnp.float32), ld.astype(jnp.float32)
    return wrapped

  forward, inverse = run(flow.forward), run(flow.inverse)
  log_prob, sample, bits_per_dim = _densities(
      forward, inverse, tuple(flow.config.image_shape),
      getattr(flow.config, "num_bits", 8))
  return flow._replace(forward=forward, inverse=inverse, log_prob=log_prob,
                       sample=sample, bits_per_dim=bits_per_dim)
