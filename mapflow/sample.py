"""Posterior samples by Langevin dynamics in the flow's latent space.

The target is the β = 1 posterior.  In the latent of an invertible flow,

    p(z | y) ∝ p_Δ(y - f(G(z))) · N(z; 0, I),

and ``x = G(z)`` is then distributed as ``p(x | y) ∝ p_Δ(y - f(x)) p_G(x)``
(the change of variables' Jacobian cancels).  With the potential
``U(z) = -log p_Δ(y - f(G(z))) - log N(z; 0, I)`` and a diagonal
preconditioner ``M``, one MALA step proposes

    z' = z - ε M ∇U(z) + √(2ε) M^{1/2} ξ,        ξ ~ N(0, I),

and accepts it with probability ``min(1, exp(U(z) - U(z') + log q(z|z') -
log q(z'|z)))``, ``log q(a|b) = -||M^{-1/2}(a - b + ε M ∇U(b))||² / (4ε)``.
The Metropolis correction makes the chain exact: its stationary law is
the posterior, with no discretisation bias (unlike unadjusted Langevin).

During ``warmup`` each chain (of each example) adapts ``log ε`` toward an
acceptance rate of 0.574 (Robbins-Monro), estimates ``M`` as the variance
of its own iterates over the warmup's middle half, and adapts ``ε`` anew
for that ``M`` in the last quarter; both are then frozen, so the kept
samples come from one fixed kernel.

With ``leapfrog_steps = L > 1`` each draw is an HMC trajectory instead:
L leapfrog steps of size h = √(2ε) with inverse mass ``M`` (one leapfrog
step is exactly the MALA proposal above), accepted with probability
``min(1, exp(H(z, p) - H(z', p')))``, ``H = U(z) + ½ Σ M p²``.  A draw
costs L gradients and moves about L times as far, which is what a chain
whose draws are strongly correlated (MALA's ESS of ~3 per 100 draws in
784-d) needs.

With ``preconditioner="laplace"`` (an argument of ``sample_posterior``)
the chains move in whitened
coordinates instead.  At the start ẑ (the MAP), the Gauss-Newton
precision of the latent posterior is

    H = Kᵀ W K + I,     K = ∂f(G(z))/∂z at ẑ,   W = diag(mask / σ²),

(the noise's per-entry precision, for Gaussian noise), and with
``L Lᵀ = H⁻¹`` (L = C⁻ᵀ, C the Cholesky factor of H) the chains sample u
in ``z = ẑ + L u``.  The map is linear and fixed, so its Jacobian is a
constant and the target in u is ``U(ẑ + L u)``, still exact.  Where the
posterior is near Gaussian around the MAP, u's is near N(0, I): one step
size fits every direction, where the diagonal adaptation above cannot
follow a posterior whose narrow directions (the ones the measurements
pin) are not the coordinate axes.  Its image-space counterpart, the
Laplace approximation ``x ≈ G(ẑ) + J L u`` (J = ∂G/∂z), gives a
per-pixel std with no sampling at all (``laplace_approximation``).

The 1-bit operator's straight-through gradient is not the gradient of any
likelihood (``sign`` has gradient 0 almost everywhere), so a sampler
driven by it would target no posterior: ``sample_posterior`` refuses it.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mapflow import noise as noise_lib
from mapflow import objectives
from mapflow import operators as ops_lib
from mapflow import sharding
from mapflow import xla
from mapflow.solve import api as solve_api
from mapflow.solve import engine, starts


class SamplerConfig(NamedTuple):
  """How ``sample_posterior`` runs.

  Attributes:
    chains: independent chains per example; ``num_samples`` is split
      among them.
    warmup: steps per chain before samples are kept (ε and M adapt).
    thin: keep every ``thin``-th step.
    init: "map" (each chain starts at the MAP, from ``map_steps`` Adam steps
      at β = 1, jittered by ``init_std``), "zeros", or latents (B, ...).
    map_steps: Adam steps of the MAP start.
    step_size: the initial ε (latent units).
    target_accept: the acceptance rate ε adapts toward.
    init_std: std of the jitter between chains' starts (in the whitened
      u with the "laplace" preconditioner).
    progress: ``callback(steps_done, steps_total)``, e.g. to drive tqdm.
    devices: devices to split the examples over (default all).
  """

  chains: int = 4
  warmup: int = 500
  thin: int = 1
  init: Any = "map"
  map_steps: int = 200
  step_size: float = 1e-3
  target_accept: float = 0.574
  init_std: float = 0.01
  progress: Optional[Callable[[int, int], None]] = None
  devices: Optional[Sequence[Any]] = None


class PosteriorSamples(NamedTuple):
  """Samples of ``p(x | y)`` and what they say.

  Attributes:
    samples: images (num_samples, B, H, W, C), pooled over chains.
    mean: the posterior mean (B, H, W, C).
    std: the per-pixel posterior std (B, H, W, C).
    acceptance: each chain's acceptance rate after warmup (chains, B).
    ess: each chain's effective sample size (chains, B): the smallest over
      pixels of its kept draws' ESS (Geyer's initial positive sequence).
    step_size: each chain's adapted ε (chains, B).
    laplace: the ``LaplaceApproximation`` the chains were whitened with
      (preconditioner "laplace"), else None.
  """

  samples: jax.Array
  mean: jax.Array
  std: jax.Array
  acceptance: np.ndarray
  ess: np.ndarray
  step_size: np.ndarray
  laplace: Optional["LaplaceApproximation"] = None


@functools.lru_cache(maxsize=None)
def latent_posterior_objective(prior) -> objectives.Objective:
  """``U(z) = -log p_Δ(y - f(G(z))) - log N(z; 0, I)`` per example;
  ``data``: params, operator, noise."""
  forward, inverse = objectives._flow_maps(prior)

  def loss(z, y, d):
    x, _ = prior.forward(d["params"], z)
    op = objectives.data_operator(d)
    r, mask = objectives.masked_residual(y, op(x), op)
    return -noise_lib.log_prob(d["noise"], r, mask) - prior.base_log_prob(z)

  shape = tuple(prior.config.image_shape)
  return objectives.Objective(loss, forward, shape, shape, inverse)


class LaplaceApproximation(NamedTuple):
  """The Gauss-Newton Laplace approximation of ``p(z | y)`` at ``center``.

  Attributes:
    center: ẑ (B, ...), the latents it is taken at.
    whitening: L (B, d, d), d the latent size, with ``L Lᵀ = H⁻¹``
      (upper triangular): ``z ≈ ẑ + L u``, u ~ N(0, I).
    image: G(ẑ) (B, H, W, C).
    image_std: the per-pixel std of the linearised ``x ≈ G(ẑ) + J L u``
      (B, H, W, C).
  """

  center: jax.Array
  whitening: jax.Array
  image: jax.Array
  image_std: jax.Array


def noise_precision(noise, shape) -> jax.Array:
  """The per-entry precision ``1 / σ²`` of Gaussian noise, broadcast to
  ``shape`` (the measurements')."""
  return jnp.broadcast_to(1.0 / jnp.square(_gaussian_std(noise)), shape)


def _gaussian_std(noise):
  return noise_lib.gaussian_std(
      noise, "the Laplace approximation's Gauss-Newton precision needs it")


@functools.lru_cache(maxsize=16)
def _jacobian_columns(prior, chunk: int):
  """Jitted ``(z0 (B, ...), start, data) -> (x0, jx, kx)``: G(ẑ) and the
  columns ``start .. start + chunk`` of J = ∂G/∂z and K = ∂f(G(z))/∂z at
  ẑ, (chunk, B, ...) each (columns past the latent size are 0)."""
  forward = objectives._flow_maps(prior)[0]

  def columns(z0, start, data):
    op = objectives.data_operator(data)
    shape = z0.shape[1:]
    d = int(np.prod(shape))
    x0, g_lin = jax.linearize(lambda z: forward(z, None, data), z0)
    _, f_lin = jax.linearize(op, x0)
    e = jax.nn.one_hot(start + jnp.arange(chunk), d, dtype=z0.dtype)
    t = jnp.broadcast_to(e.reshape((chunk, 1) + shape),
                         (chunk,) + z0.shape)
    jx = jax.vmap(g_lin)(t)
    return x0, jx, jax.vmap(f_lin)(jx)

  return jax.jit(columns, compiler_options=xla.step_options())


def laplace_approximation(z0, y, *, prior, params, operator, noise,
                          chunk: Optional[int] = None) -> LaplaceApproximation:
  """The Gauss-Newton Laplace approximation of the β = 1 latent posterior
  at ``z0`` (B, ...), usually its mode (the minimiser of
  ``latent_posterior_objective``, which ``sample_posterior``'s "map" start
  computes; not ``recover``'s MAP in x, whose loss has the flow's
  log-determinant):

      H = Kᵀ W K + I,   K = ∂f(G(z))/∂z at z0,   W = diag(mask / σ²),

  ``L = C⁻ᵀ`` for the Cholesky factor C of H (so ``L Lᵀ = H⁻¹``), and the
  image std ``sqrt(diag(J L Lᵀ Jᵀ))``, J = ∂G/∂z.  For an affine flow, a
  linear operator and Gaussian noise it is the exact posterior.  Costs d
  forward-mode passes of the flow per example (d the latent size: 784 at
  28x28), ``chunk`` columns at a time (default: about 2,048 passes per
  call over the batch), and a d x d Cholesky factorisation each, one
  example at a time in float64 on the host; the result's ``whitening`` is
  (B, d, d) float32 (157 MB at batch 64 and 28x28; d = 12,288 at 64x64x3
  would need 604 MB an example), so it suits small images.
  """
  _check(operator)
  solve_api._check_params(prior, params)
  y = solve_api._check_inputs(y, operator, noise, prior.config.image_shape,
                              {})
  z0 = starts.as_array(z0, "z0", jnp.float32)
  shape = tuple(prior.config.image_shape)
  b = y.shape[0]
  if z0.shape != (b,) + shape:
    raise ValueError(f"z0: got shape {z0.shape}, expected latents of shape "
                     f"{(b,) + shape}")
  bad = int(jnp.sum(~jnp.isfinite(z0)))
  if bad:
    raise ValueError(f"z0: got {bad} non-finite entries, expected finite "
                     "latents")
  w = noise_precision(noise, y.shape)
  mask = operator.measurement_mask()
  if mask is not None:
    w = w * jnp.broadcast_to(mask, y.shape)
  d = int(np.prod(shape))
  if chunk is None:
    chunk = max(1, min(d, 2048 // max(b, 1)))
  elif isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
    raise ValueError(f"chunk: got {chunk!r}, expected an int >= 1")
  cols = _jacobian_columns(prior, min(chunk, d))
  data = {"params": params, "operator": operator}
  jx, kx = [], []
  for start in range(0, d, chunk):
    x0, j, k = cols(z0, jnp.int32(start), data)
    jx.append(np.asarray(j))
    kx.append(np.asarray(k))
  # (B, entries, d) in float32: the chunks stack columns first, so move
  # them last.  The factorisation runs in float64 one example at a time:
  # the host holds one example's float64 d x d temporaries beside the
  # batch's float32 whitening (B, d, d), not several float64 (B, d, d).
  jmat = np.moveaxis(np.concatenate(jx)[:d], 0, -1).reshape(b, -1, d)
  kmat = np.moveaxis(np.concatenate(kx)[:d], 0, -1).reshape(b, -1, d)
  del jx, kx
  w = np.asarray(w, np.float64).reshape(b, -1, 1)
  lmat = np.empty((b, d, d), np.float32)
  std = np.empty((b, jmat.shape[1]), np.float32)
  for i in range(b):
    k64 = kmat[i].astype(np.float64)
    h = k64.T @ (w[i] * k64) + np.eye(d)
    li = np.linalg.inv(np.linalg.cholesky(h)).T
    lmat[i] = li
    jl = jmat[i].astype(np.float64) @ li
    std[i] = np.sqrt(np.sum(np.square(jl), axis=-1))
  return LaplaceApproximation(
      center=z0, whitening=jnp.asarray(lmat), image=x0,
      image_std=jnp.asarray(std.reshape((b,) + shape)))


def _from_whitened(u, z0, lmat):
  """``z = ẑ + L u`` for chains u (C, B, ...), ẑ (B, ...), L (B, d, d)."""
  c, b = u.shape[:2]
  flat = u.reshape(c, b, -1)
  z = z0.reshape(1, b, -1) + jnp.einsum(
      "bij,cbj->cbi", lmat, flat, precision=jax.lax.Precision.HIGHEST)
  return z.reshape(u.shape)


def _sq(a):
  """Squared norm over each (chain, example)'s latent axes."""
  return jnp.sum(jnp.square(a), axis=tuple(range(2, a.ndim)))


def _accept_and_adapt(state, z_new, u_new, g_new, log_alpha, key, t, adapt,
                      target_accept):
  """The Metropolis decision per chain (a non-finite ratio or energy
  rejects), and the Robbins-Monro move of ``log ε`` toward
  ``target_accept`` (``adapt`` 0/1; ``t`` counts adaptation steps)."""
  z, u, g, log_eps, m = state
  log_alpha = jnp.where(jnp.isfinite(log_alpha) & jnp.isfinite(u_new),
                        log_alpha, -jnp.inf)
  accept = jnp.log(jax.random.uniform(key, u.shape)) < log_alpha
  keep = accept.reshape(accept.shape + (1,) * (z.ndim - 2))
  z = jnp.where(keep, z_new, z)
  u = jnp.where(accept, u_new, u)
  g = jnp.where(keep, g_new, g)
  rate = adapt / jnp.power(t + 10.0, 0.6)
  log_eps = log_eps + rate * (jnp.minimum(1.0, jnp.exp(log_alpha)) -
                              target_accept)
  return (z, u, g, log_eps, m), accept


@functools.lru_cache(maxsize=16)
def _compiled(objective, target_accept):
  losses = engine._batched_losses(objective)

  def value_grad(z, y, data):
    # With data["_laplace"] = (ẑ, L) the chains' variable is u, z = ẑ + L u.
    data = dict(data)
    lap = data.pop("_laplace", None)

    def total(v):
      l = losses(v if lap is None else _from_whitened(v, *lap), y, {}, data)
      return jnp.sum(l), l
    (_, u), g = jax.value_and_grad(total, has_aux=True)(z)
    return u, g

  def step(state, key, t, adapt, y, data):
    """One MALA step of every chain (C, B, ...); ``adapt`` (0/1) lets ε
    move; ``t`` counts adaptation steps."""
    z, u, g, log_eps, m = state
    eps_cb = jnp.exp(log_eps)                                    # (C, B)
    eps = eps_cb.reshape(eps_cb.shape + (1,) * (z.ndim - 2))
    xi = jax.random.normal(key, z.shape)
    z_new = z - eps * m * g + jnp.sqrt(2.0 * eps * m) * xi
    u_new, g_new = value_grad(z_new, y, data)
    # -log q(z'|z) and -log q(z|z'), up to the same constant.
    fwd = _sq((z_new - z + eps * m * g) / jnp.sqrt(m)) / (4.0 * eps_cb)
    bwd = _sq((z - z_new + eps * m * g_new) / jnp.sqrt(m)) / (4.0 * eps_cb)
    return _accept_and_adapt(state, z_new, u_new, g_new,
                             u - u_new - bwd + fwd, jax.random.fold_in(key, 1),
                             t, adapt, target_accept)

  jit = functools.partial(jax.jit, compiler_options=xla.step_options())
  # The bare value_grad too, for programs that call it (options may only
  # be given to the outermost jit).
  return jit(step, donate_argnums=(0,)), jit(value_grad), value_grad


@functools.lru_cache(maxsize=16)
def _compiled_hmc(objective, target_accept):
  """HMC in three programs, so that the gradient is compiled once and the
  host loops over leapfrog steps (XLA:CPU runs convolutions inside loop
  bodies slowly, JAX issue #12868): ``begin`` draws the momentum,
  ``leap`` is one leapfrog step, ``end`` accepts or rejects and adapts ε.

  Inverse mass ``m`` (the preconditioner), momentum ``p ~ N(0, m⁻¹)``,
  kinetic energy ``K(p) = ½ Σ m p²``, leapfrog step ``h = √(2ε)``:

      p ← p - ½h ∇U(z);  z ← z + h m p;  p ← p - ½h ∇U(z).

  One leapfrog step is MALA's proposal with the same ε; L of them move a
  chain about L times as far per draw at L gradients."""
  value_grad = _compiled(objective, target_accept)[2]

  def expand(a, like):
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))

  def begin(state, key):
    z, u, g, log_eps, m = state
    xi = jax.random.normal(key, z.shape)
    return xi / jnp.sqrt(m), 0.5 * _sq(xi)               # p, K(p)

  def leap(z, p, g, log_eps, m, y, data):
    h = expand(jnp.sqrt(2.0 * jnp.exp(log_eps)), z)
    p = p - 0.5 * h * g
    z = z + h * m * p
    u, g = value_grad(z, y, data)
    p = p - 0.5 * h * g
    return z, p, g, u

  def end(state, z_new, p_new, g_new, u_new, k0, key, t, adapt):
    u, m = state[1], state[4]
    k1 = 0.5 * _sq(jnp.sqrt(m) * p_new)
    return _accept_and_adapt(state, z_new, u_new, g_new,
                             (u + k0) - (u_new + k1), key, t, adapt,
                             target_accept)

  jit = functools.partial(jax.jit, compiler_options=xla.step_options())
  return (jit(begin), jit(leap, donate_argnums=(0, 1, 2)),
          jit(end, donate_argnums=(0,)))


def _ess(draws: np.ndarray) -> np.ndarray:
  """Effective sample size of each column of ``draws`` (n, k), by Geyer's
  initial positive sequence on the FFT autocorrelation."""
  n = draws.shape[0]
  if n < 4:
    return np.full(draws.shape[1:], float(n))
  x = draws - draws.mean(axis=0)
  f = np.fft.rfft(x, n=2 * n, axis=0)
  acov = np.fft.irfft(f * np.conj(f), axis=0)[:n] / n
  var = acov[0]
  rho = np.where(var > 0, acov / np.where(var > 0, var, 1.0), 0.0)
  # Sums of consecutive pairs, kept while positive.
  m = (n - 1) // 2
  pairs = rho[0:2 * m:2] + rho[1:2 * m + 1:2]
  positive = np.cumprod(pairs > 0, axis=0).astype(bool)
  tau = -1.0 + 2.0 * np.sum(np.where(positive, pairs, 0.0), axis=0)
  tau = np.maximum(tau, 1.0 / n)
  return np.where(var > 0, n / tau, float(n))


def _check(operator):
  if ops_lib.is_one_bit(operator):
    raise ValueError(
        "operator: got a 1-bit operator; its straight-through gradient is "
        "not the gradient of a likelihood (sign has gradient 0 almost "
        "everywhere), so Langevin dynamics driven by it sample no "
        "posterior.  Expected a differentiable operator.")


def sample_posterior(y, *, prior, params, operator, noise, num_samples: int,
                     key, config: Optional[SamplerConfig] = None,
                     leapfrog_steps: int = 1,
                     preconditioner: str = "adaptive") -> PosteriorSamples:
  """MALA (or HMC) samples of the β = 1 posterior ``p(x | y)`` for every
  example.

  Args:
    y: measurements (B, ...).
    prior, params: the flow and its params.
    operator: a differentiable forward operator (not 1-bit).
    noise: the noise density (any of ``mapflow.noise``).
    num_samples: kept samples per example, pooled over the chains.
    key: PRNG key.
    config: a ``SamplerConfig``.
    leapfrog_steps: 1 for MALA; L > 1 for HMC with L leapfrog steps of
      size √(2ε) per draw (L gradients a draw; ``_compiled_hmc``).  Each
      is exact (Metropolis-corrected).
    preconditioner: "adaptive" (a diagonal mass from the warmup's
      iterates) or "laplace" (chains move u in ``z = ẑ + L u``, L Lᵀ the
      inverse Gauss-Newton precision at the start ẑ; Gaussian noise only).

  Returns:
    ``PosteriorSamples``.
  """
  cfg = SamplerConfig() if config is None else config
  if not isinstance(cfg, SamplerConfig):
    raise TypeError(f"config: got {type(cfg).__name__}, expected a "
                    "mapflow.sample.SamplerConfig")
  for name in ("chains", "thin", "num_samples", "leapfrog_steps"):
    v = {"num_samples": num_samples, "leapfrog_steps": leapfrog_steps}.get(
        name, getattr(cfg, name, None))
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name}: got {v!r}, expected an int >= 1")
  if isinstance(cfg.warmup, bool) or not isinstance(
      cfg.warmup, (int, np.integer)) or cfg.warmup < 0:
    raise ValueError(f"warmup: got {cfg.warmup!r}, expected an int >= 0")
  for name in ("step_size", "target_accept", "init_std"):
    v = getattr(cfg, name)
    if not starts.is_real_number(v) or not math.isfinite(float(v)):
      raise ValueError(f"{name}: got {v!r}, expected a finite number")
  if not cfg.step_size > 0:
    raise ValueError(f"step_size: got {cfg.step_size!r}, expected a "
                     "positive float")
  if not 0.0 < cfg.target_accept < 1.0:
    raise ValueError(f"target_accept: got {cfg.target_accept!r}, expected "
                     "an acceptance rate in (0, 1)")
  if cfg.init_std < 0:
    raise ValueError(f"init_std: got {cfg.init_std!r}, expected a number "
                     ">= 0")
  if isinstance(cfg.init, str) and cfg.init == "map" and (
      isinstance(cfg.map_steps, bool) or
      not isinstance(cfg.map_steps, (int, np.integer)) or cfg.map_steps < 1):
    raise ValueError(f"map_steps: got {cfg.map_steps!r}, expected an int "
                     ">= 1 (the Adam steps of the MAP start)")
  key = starts.check_key(key, "key")
  # NumPy integers pass the checks; the programs take Python ints.
  num_samples, leapfrog_steps = int(num_samples), int(leapfrog_steps)
  cfg = cfg._replace(chains=int(cfg.chains), thin=int(cfg.thin),
                     warmup=int(cfg.warmup))
  if isinstance(cfg.init, str) and cfg.init == "map":
    cfg = cfg._replace(map_steps=int(cfg.map_steps))
  if preconditioner not in ("adaptive", "laplace"):
    raise ValueError(f"preconditioner: got {preconditioner!r}, expected "
                     "'adaptive' or 'laplace'")
  _check(operator)
  if preconditioner == "laplace":
    _gaussian_std(noise)  # refuses non-Gaussian noise before any work
  solve_api._check_params(prior, params)
  y = solve_api._check_inputs(y, operator, noise, prior.config.image_shape,
                              {})
  obj = latent_posterior_objective(prior)
  data = {"params": params, "operator": operator, "noise": noise}
  b = y.shape[0]
  shape = tuple(prior.config.image_shape)
  c = cfg.chains
  k_init, k_run = jax.random.split(key)
  if isinstance(cfg.init, str) and cfg.init == "map":
    # The MAP in z of the same potential (β = 1), then jitter per chain.
    res = engine.minimize(obj, y, data, steps=cfg.map_steps,
                          optimizer=engine.DEFAULT_OPTIMIZER,
                          config=engine.SolverConfig(devices=cfg.devices))
    z0 = res.z[0]
  elif isinstance(cfg.init, str) and cfg.init == "zeros":
    z0 = jnp.zeros((b,) + shape)
  elif isinstance(cfg.init, str):
    raise ValueError(f"init: got {cfg.init!r}, expected 'map', 'zeros' or "
                     "latents (B, ...)")
  else:
    z0 = starts.as_array(cfg.init, "init", jnp.float32)
    if z0.shape != (b,) + shape or not bool(jnp.all(jnp.isfinite(z0))):
      raise ValueError(f"init: got latents of shape {z0.shape}, expected "
                       f"finite latents of shape {(b,) + shape}")
  lap = None
  if preconditioner == "laplace":
    # The chains move u, z = ẑ + L u: the first starts at the MAP (u = 0),
    # the others jittered by init_std in u.  Not at draws u ~ N(0, I) of
    # the approximation: on the shipped prior (SINUSOIDAL s = 0.2) such a
    # draw's potential lies ~13x the Gaussian's d/2 above the MAP's, so a
    # chain started there spends its warmup coming down.
    lap = laplace_approximation(z0, y, prior=prior, params=params,
                                operator=operator, noise=noise)
    z = cfg.init_std * jax.random.normal(k_init, (c,) + z0.shape)
    z = z.at[0].set(0.0)
  else:
    z = z0[None] + cfg.init_std * jax.random.normal(k_init,
                                                    (c,) + z0.shape)
    z = z.at[0].set(z0)
  mesh = sharding.batch_mesh(cfg.devices)
  y_p, n_pad = sharding.pad_along(y, mesh.size, 0)
  data = {**data, "operator": ops_lib.pad_examples(operator, n_pad)}
  z, _ = sharding.pad_along(z, mesh.size, 1)
  y_p = sharding.shard_along(y_p, mesh, 0)
  z = sharding.shard_along(z, mesh, 1)
  data = sharding.replicate(data, mesh)
  if lap is not None:
    data["_laplace"] = tuple(
        sharding.shard_along(sharding.pad_along(a, mesh.size, 0)[0], mesh, 0)
        for a in (lap.center, lap.whitening))
  step, value_grad, _ = _compiled(obj, float(cfg.target_accept))
  if leapfrog_steps > 1:
    begin, leap, end = _compiled_hmc(obj, float(cfg.target_accept))

    def step(state, key, t, adapt, y, data):  # noqa: F811 (HMC's step)
      p, k0 = begin(state, key)
      z, g = jnp.array(state[0]), jnp.array(state[2])  # (leap donates)
      for _ in range(leapfrog_steps):
        z, p, g, u = leap(z, p, g, state[3], state[4], y, data)
      return end(state, z, p, g, u, k0, jax.random.fold_in(key, 1), t,
                 adapt)
  u, g = value_grad(z, y_p, data)
  log_eps = jnp.full(u.shape, math.log(cfg.step_size))
  state = (z, u, g, log_eps, jnp.ones_like(z))
  per_chain = -(-num_samples // c)
  total = cfg.warmup + per_chain * cfg.thin
  kept, accepted = [], np.zeros(u.shape)
  # Warmup: ε adapts throughout; M is the variance of the iterates over
  # its middle half, set at three quarters, after which ε adapts anew.
  m_from, m_at = cfg.warmup // 4, (3 * cfg.warmup) // 4
  moments = None  # running sums for the preconditioner
  t_adapt = 0
  for t in range(total):
    warm = t < cfg.warmup
    state, acc = step(state, jax.random.fold_in(k_run, t),
                      jnp.float32(t_adapt),
                      jnp.float32(1.0 if warm else 0.0), y_p, data)
    t_adapt += 1
    if warm and m_from <= t < m_at:
      zt = state[0]
      # (copies: the step donates its state's buffers)
      moments = ((jnp.array(zt), jnp.square(zt), 1) if moments is None else
                 (moments[0] + zt, moments[1] + jnp.square(zt),
                  moments[2] + 1))
    if warm and t == m_at - 1 and moments is not None and moments[2] > 10:
      t_adapt = 0
      mean = moments[0] / moments[2]
      var = jnp.maximum(moments[1] / moments[2] - jnp.square(mean), 1e-8)
      # Rescale so the average preconditioner is 1 (ε keeps its meaning).
      m = var / jnp.mean(var, axis=tuple(range(2, var.ndim)),
                         keepdims=True)
      zt, ut, _, le, _ = state
      ut, gt = value_grad(zt, y_p, data)
      state = (zt, ut, gt, le, m)
    if not warm:
      accepted += np.asarray(acc)
      if (t - cfg.warmup) % cfg.thin == cfg.thin - 1:
        kept.append(np.asarray(state[0])[:, :b])
    if cfg.progress is not None:
      cfg.progress(t + 1, total)
  zs = np.stack(kept)                                   # (S, C, B, ...)
  if lap is not None:
    zs = np.asarray(_from_whitened(
        jnp.asarray(zs.reshape((-1, b) + shape)), lap.center,
        lap.whitening)).reshape(zs.shape)
  n_kept = zs.shape[0]
  forward = objectives._flow_maps(prior)[0]
  to_x = engine._to_image(forward)
  flat = zs.reshape((-1,) + shape)
  xs = np.concatenate([np.asarray(to_x(jnp.asarray(flat[i:i + 256]),
                                       None, {"params": params}))
                       for i in range(0, len(flat), 256)])
  xs = xs.reshape(zs.shape)
  ess = np.zeros((c, b))
  for ci in range(c):
    for bi in range(b):
      ess[ci, bi] = float(np.min(_ess(xs[:, ci, bi].reshape(n_kept, -1))))
  pooled = np.moveaxis(xs, 1, 0).reshape((c * n_kept, b) + shape)
  # Chains in order: the first num_samples draws, every chain alike.
  order = np.arange(c * n_kept).reshape(c, n_kept).T.reshape(-1)
  pooled = pooled[order][:num_samples]
  return PosteriorSamples(
      samples=jnp.asarray(pooled), mean=jnp.asarray(pooled.mean(axis=0)),
      std=jnp.asarray(pooled.std(axis=0, ddof=1) if num_samples > 1
                      else np.zeros(pooled.shape[1:])),
      acceptance=accepted[:, :b] / max(1, total - cfg.warmup),
      ess=ess, step_size=np.exp(np.asarray(state[3]))[:, :b], laplace=lap)


def _std_floor(std):
  """``std`` floored at 1e-12 of its largest value: a pixel the posterior
  pins exactly does not divide by zero."""
  std = np.asarray(std, np.float64)
  return np.maximum(std, 1e-12 * max(float(std.max(initial=0.0)), 1e-30))


def conformal_std_scale(x, mean, std, level: float = 0.9) -> float:
  """Split-conformal width for intervals ``mean ± q · std``.

  The examples (axis 0: n images of P entries each) are the exchangeable
  units; entries within one are not.  On calibration examples with known
  truth ``x``, the scores are ``r = |x - mean| / std``, n·P of them, and
  q is the k-th smallest with k = ⌈level · (n + 1) · P⌉ (``inf`` if
  k > n·P).  For a new example exchangeable with the calibration ones,
  the expected share of its entries inside ``mean ± q · std`` is then at
  least ``level``, however wrong the sampler's std is: under-dispersed
  chains (poor mixing, a misspecified prior) only make q large.  (Pool the
  new example's P scores with the calibration ones: the k-th smallest of
  all (n + 1)·P is at most q, and by exchangeability each example's
  expected share at or below it is the pool's, at least ``level``.)  The
  guarantee is on average over examples and entries, not per entry.
  ``std`` is floored as ``conformal_inside`` floors it.
  """
  if not 0.0 < level < 1.0:
    raise ValueError(f"level: got {level!r}, expected a share in (0, 1)")
  x, mean, std = (np.asarray(a, np.float64) for a in (x, mean, std))
  if not x.shape == mean.shape == std.shape or x.ndim < 1 or x.size == 0:
    raise ValueError(f"x, mean, std: got shapes {x.shape}, {mean.shape}, "
                     f"{std.shape}, expected one non-empty shape (n, ...)")
  if not (np.all(np.isfinite(std)) and np.all(std >= 0)):
    raise ValueError("std: expected finite values >= 0")
  for name, a in (("x", x), ("mean", mean)):
    bad = int(np.sum(~np.isfinite(a)))
    if bad:
      raise ValueError(f"{name}: got {bad} non-finite entries, expected "
                       "finite values")
  n, per = x.shape[0], x.size // x.shape[0]
  r = np.sort((np.abs(x - mean) / _std_floor(std)).ravel())
  # The small slack keeps float error (0.9 * 75 = 67.50000000000001) from
  # raising the rank.
  k = int(np.ceil(level * (n + 1) * per - 1e-9))
  return float("inf") if k > r.size else float(r[k - 1])


def conformal_inside(x, mean, std, q: float):
  """Whether each entry of ``x`` lies in ``mean ± q · std`` (std floored
  as in ``conformal_std_scale``; q = inf takes in everything)."""
  x, mean = np.asarray(x, np.float64), np.asarray(mean, np.float64)
  std = np.asarray(std, np.float64)
  if not x.shape == mean.shape == std.shape:
    raise ValueError(f"x, mean, std: got shapes {x.shape}, {mean.shape}, "
                     f"{std.shape}, expected one shape")
  if not starts.is_real_number(q) or np.isnan(float(q)) or q < 0:
    raise ValueError(f"q: got {q!r}, expected a number >= 0 (inf takes in "
                     "everything)")
  if np.isinf(q):
    return np.ones(x.shape, bool)
  return np.abs(x - mean) <= q * _std_floor(std)
