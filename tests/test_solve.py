"""Operators, noise, objectives and the solver against closed forms."""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import mapflow as mf

KEY = jax.random.PRNGKey(0)
SHAPE = (2, 2, 1)
ADAM = optax.adam(0.05)


def linear_prior(seed=0):
  rng = np.random.RandomState(seed)
  l = np.tril(rng.randn(4, 4)) * 0.3 + np.eye(4) * 0.8
  mu = rng.randn(*SHAPE) * 0.5
  prior = mf.flows.linear_gaussian(mf.flows.LinearGaussianConfig(SHAPE))
  return prior, mf.flows.linear_gaussian_params(mu, l), mu.reshape(-1), l


def closed_form_map(y, a, sigma, mu, l, beta):
  """argmin ||y - A x||^2 / (2 s^2) + beta/2 (x-mu)^T S^-1 (x-mu)."""
  s_inv = np.linalg.inv(l @ l.T)
  h = a.T @ a / sigma ** 2 + beta * s_inv
  rhs = a.T @ y / sigma ** 2 + beta * s_inv @ mu
  return np.linalg.solve(h, rhs)


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_map_matches_closed_form_gaussian_posterior(beta):
  prior, params, mu, l = linear_prior()
  op = mf.operators.gaussian(KEY, 3, SHAPE)
  a = np.asarray(op.matrix)
  sigma = 0.5
  y = jax.random.normal(jax.random.PRNGKey(3), (2, 3))
  res = mf.recover(y, prior=prior, params=params, operator=op,
                   noise=mf.noise.gaussian(sigma), beta=beta, steps=1500,
                   optimizer=ADAM)
  for i in range(2):
    want = closed_form_map(np.asarray(y[i]), a, sigma, mu, l, beta)
    got = np.asarray(res.x[i]).reshape(-1)
    assert np.linalg.norm(got - want) <= 1e-3 * max(1.0, np.linalg.norm(want))
  chex.assert_shape(res.trace, (1500, 2))
  chex.assert_shape(res.loss, (2,))
  assert np.all(np.asarray(res.skipped) == 0)


def test_lbfgs_reaches_the_same_map():
  prior, params, mu, l = linear_prior()
  op = mf.operators.scale(0.5)
  y = jax.random.normal(KEY, (2,) + SHAPE)
  res = mf.recover(y, prior=prior, params=params, operator=op,
                   noise=mf.noise.gaussian(0.4), beta=1.0, steps=30,
                   optimizer=optax.lbfgs())
  a = 0.5 * np.eye(4)
  want = closed_form_map(np.asarray(y[0]).reshape(-1), a, 0.4, mu, l, 1.0)
  np.testing.assert_allclose(np.asarray(res.x[0]).reshape(-1), want,
                             rtol=1e-3, atol=1e-4)


def test_theorem_4_1_denoising_bound():
  # x_bar - x* <= ||delta|| / (1 + mu sigma^2) for -log p mu-strongly convex.
  prior, params, mu_vec, l = linear_prior(1)
  cov = l @ l.T
  mu_conv = 1.0 / np.linalg.eigvalsh(cov).max()
  sigma = 0.7
  # The theorem takes x* at a local maximum of p: the Gaussian's mean.
  x_star = np.broadcast_to(mu_vec.reshape(SHAPE), (8,) + SHAPE)
  delta = sigma * np.asarray(jax.random.normal(jax.random.PRNGKey(5),
                                               x_star.shape))
  y = x_star + delta
  res = mf.recover(jnp.asarray(y), prior=prior, params=params,
                   operator=mf.operators.identity(),
                   noise=mf.noise.gaussian(sigma), beta=1.0, steps=1500,
                   optimizer=ADAM)
  err = np.linalg.norm((np.asarray(res.x) - x_star).reshape(8, -1), axis=1)
  bound = np.linalg.norm(delta.reshape(8, -1), axis=1) / (
      1 + mu_conv * sigma ** 2)
  assert np.all(err <= bound + 1e-4)
  assert np.mean(err) < np.mean(bound)


def test_noise_log_densities_match_closed_forms():
  r = np.asarray(jax.random.normal(KEY, (3, 4, 6, 1)))
  sin = mf.noise.sinusoidal((4, 6, 1), 0.8)
  k = np.arange(4)
  std = 0.8 * np.exp(np.sin(2 * np.pi * 4 * k / 4) - 1)
  std = np.broadcast_to(std[:, None, None], (4, 6, 1))
  want = stats.norm.logpdf(r, 0, std).reshape(3, -1).sum(1)
  np.testing.assert_allclose(sin.log_prob(r), want, rtol=1e-5)
  np.testing.assert_allclose(sin.std_map, std, rtol=1e-6)
  rad = mf.noise.radial((4, 6, 1), 1.5)
  i, j = np.meshgrid(np.arange(4), np.arange(6), indexing="ij")
  d = np.sqrt((i - 1.5) ** 2 + (j - 2.5) ** 2)
  rstd = 1.5 * np.exp(-0.005 * (64 * d / 4) ** 2)[..., None]
  np.testing.assert_allclose(rad.std_map, rstd, rtol=1e-5)
  np.testing.assert_allclose(
      rad.log_prob(r), stats.norm.logpdf(r, 0, rstd).reshape(3, -1).sum(1),
      rtol=1e-5)
  iso = mf.noise.gaussian(0.3)
  np.testing.assert_allclose(
      iso.log_prob(r), stats.norm.logpdf(r, 0, 0.3).reshape(3, -1).sum(1),
      rtol=1e-5)
  # s is the largest std: reached where sin = 1 (rows k = H/16 + k' H/4).
  big = mf.noise.sinusoidal((32, 4, 1), 0.8)
  assert float(jnp.max(big.std_map)) == pytest.approx(0.8, rel=1e-6)


def test_sinusoidal_1d_shift_mask_and_samples():
  m = 40
  n1 = mf.noise.sinusoidal_1d(m, 2.0)
  i = np.arange(m)
  std = 2.0 * np.exp(np.sin(2 * np.pi * i / 16) - 1)
  np.testing.assert_allclose(n1.std_map, std, rtol=1e-6)
  np.testing.assert_allclose(n1.mean_map, 1.0)
  r = np.asarray(jax.random.normal(KEY, (2, m)))
  mask = (i < 25).astype(np.float32)
  want = (stats.norm.logpdf(r, 1.0, std) * mask).sum(1)
  np.testing.assert_allclose(n1.masked_log_prob(r, mask), want, rtol=1e-5)
  s = np.asarray(n1.sample(seed=KEY, sample_shape=(20000,)))
  np.testing.assert_allclose(s.mean(0), 1.0, atol=0.1)
  np.testing.assert_allclose(s.std(0), std, rtol=0.05)


def test_any_distrax_distribution_works_as_noise():
  import distrax
  prior, params, _, _ = linear_prior()
  lap = distrax.Independent(distrax.Laplace(jnp.zeros(SHAPE),
                                            0.3 * jnp.ones(SHAPE)), 3)
  y = jax.random.normal(KEY, (2,) + SHAPE)
  res = mf.recover(y, prior=prior, params=params,
                   operator=mf.operators.identity(), noise=lap, beta=1.0,
                   steps=50, optimizer=ADAM)
  assert np.all(np.isfinite(res.loss))


def test_straight_through_sign():
  u = jnp.array([-2.0, -0.5, 0.3, 1.5])
  y = mf.operators.sign_ste(u)
  np.testing.assert_array_equal(y, [-1, -1, 1, 1])
  g = jax.grad(lambda u: jnp.sum(mf.operators.sign_ste(u) * jnp.arange(4.)))(u)
  np.testing.assert_array_equal(g, [0, 1, 2, 3])
  gc = jax.grad(lambda u: jnp.sum(
      mf.operators.sign_ste_clipped(u) * jnp.arange(4.)))(u)
  np.testing.assert_array_equal(gc, [0, 1, 2, 0])
  op = mf.operators.one_bit(mf.operators.gaussian(KEY, 50, (4, 4, 1)), 0.5)
  out = op(jax.random.uniform(KEY, (3, 4, 4, 1)))
  assert set(np.unique(np.asarray(out)).tolist()) <= {-1.0, 1.0}


def test_active_rows_count_nowhere():
  op = mf.operators.gaussian(KEY, 10, (2, 2, 1), active=6)
  y = op(jnp.ones((1, 2, 2, 1)))
  assert np.all(np.asarray(y[0, 6:]) == 0)
  with pytest.raises(ValueError, match="active"):
    mf.operators.gaussian(KEY, 10, 4, active=11)


def test_sweep_equals_sequential_recover_and_does_not_recompile():
  prior, params, _, _ = linear_prior()
  op = mf.operators.gaussian(KEY, 4, SHAPE)
  x = prior.sample(params, KEY, 3)
  y = op(x) + 0.1 * jax.random.normal(jax.random.PRNGKey(9), (3, 4))
  noise = mf.noise.gaussian(0.2)
  betas, ms = jnp.array([0.5, 2.0]), jnp.array([2, 4])
  grid = mf.sweep(y, prior=prior, params=params, operator=op, noise=noise,
                  betas=betas, ms=ms, steps=60, optimizer=ADAM)
  chex.assert_shape(grid.x, (2, 2, 3) + SHAPE)
  chex.assert_shape(grid.loss, (2, 2, 3))
  for bi, b in enumerate(betas):
    for mi, m in enumerate(ms):
      res = mf.recover(y, prior=prior, params=params,
                       operator=mf.operators.with_active(op, m), noise=noise,
                       beta=b, steps=60, optimizer=ADAM)
      np.testing.assert_allclose(grid.x[bi, mi], res.x, rtol=1e-4, atol=1e-5)
  step_fn = mf.solve.compiled(mf.objectives.map_objective(prior),
                              ADAM, 1)[1]
  before = step_fn._cache_size()
  mf.recover(y * 2, prior=prior, params=params,
             operator=mf.operators.with_active(op, 3),
             noise=mf.noise.gaussian(0.7), beta=7.0, steps=5, optimizer=ADAM,
             key=jax.random.PRNGKey(4))
  assert step_fn._cache_size() == before


def test_sweep_in_groups_equals_one_call():
  """``max_batch`` splits the grid into equal groups (the last padded) that
  share one compiled step; the results equal the whole grid at once."""
  prior, params, _, _ = linear_prior()
  op = mf.operators.gaussian(KEY, 4, SHAPE)
  y = op(prior.sample(params, KEY, 2))
  kw = dict(prior=prior, params=params, operator=op,
            noise=mf.noise.gaussian(0.3),
            betas=jnp.array([0.3, 1.0, 3.0, 10.0, 30.0]),
            ms=jnp.array([2, 4]), steps=20, optimizer=ADAM)
  start = mf.SolverConfig(init="random", key=jax.random.PRNGKey(2))
  whole = mf.sweep(y, config=start, **kw)
  step_fn = mf.solve.compiled(mf.objectives.map_objective(prior),
                              ADAM, 1)[1]
  before = step_fn._cache_size()
  # 10 points, at most 4 a call: 3 calls of 4, the last padded with 2.
  grouped = mf.sweep(y, config=start._replace(max_batch=8), **kw)
  assert step_fn._cache_size() - before <= 2  # one shape (+1 first-call)
  for a, b in zip(grouped, whole):
    chex.assert_equal_shape([a, b])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="max_batch"):
    mf.sweep(y, config=start._replace(max_batch=0), **kw)


def test_sweep_continues_each_point_from_its_own_start():
  """A per-point ``init`` (an earlier sweep's ``z``) equals recovering each
  grid point separately from its own latents, grouped or not."""
  prior, params, _, _ = linear_prior()
  op = mf.operators.gaussian(KEY, 4, SHAPE)
  y = op(prior.sample(params, KEY, 3))
  betas, ms = jnp.array([0.3, 3.0]), jnp.array([2, 4])
  kw = dict(prior=prior, params=params, operator=op, betas=betas, ms=ms,
            steps=15, optimizer=ADAM)
  first = mf.sweep(y, noise=mf.noise.gaussian(1.0), **kw)
  chex.assert_shape(first.z, (2, 2, 3) + SHAPE)
  second = mf.noise.gaussian(0.2)
  cont = mf.sweep(y, noise=second, config=mf.SolverConfig(init=first.z),
                  **kw)
  grouped = mf.sweep(y, noise=second, config=mf.SolverConfig(
      init=first.z[:, :, None], max_batch=6), **kw)
  for bi, b in enumerate(betas):
    for mi, m in enumerate(ms):
      res = mf.recover(y, prior=prior, params=params,
                       operator=mf.operators.with_active(op, m), noise=second,
                       beta=b, steps=15, optimizer=ADAM,
                       config=mf.SolverConfig(init=first.z[bi, mi]))
      np.testing.assert_allclose(cont.x[bi, mi], res.x, rtol=1e-4,
                                 atol=1e-5)
      np.testing.assert_allclose(grouped.x[bi, mi], res.x, rtol=1e-4,
                                 atol=1e-5)
  # Starting every point from the same latents is a different problem.
  shared = mf.sweep(y, noise=second,
                    config=mf.SolverConfig(init=first.z[0, 0]), **kw)
  assert not np.allclose(shared.x[1, 1], cont.x[1, 1], atol=1e-4)
  with pytest.raises(ValueError, match="per-point"):
    mf.sweep(y, noise=second, config=mf.SolverConfig(init=first.z[:1]),
             **kw)


def test_chunked_steps_equal_single_steps_and_stop_at_steps():
  """A chunk of scanned steps must not run past ``steps``: a short last
  chunk leaves the carry alone after its ``n``-th step, with no new
  compile for a new remainder."""
  prior, params, _, _ = linear_prior()
  y = jax.random.normal(KEY, (3,) + SHAPE)
  kw = dict(prior=prior, params=params, operator=mf.operators.identity(),
            noise=mf.noise.gaussian(0.5), beta=1.0, optimizer=ADAM)
  step_fn = mf.solve.compiled(mf.objectives.map_objective(prior),
                              ADAM, 4)[1]
  sizes = []
  obj = mf.objectives.map_objective(prior)
  for steps in (10, 7, 3, 8):  # last chunks of 2, 3, 3 and a full 4 steps
    one = mf.recover(y, steps=steps, config=mf.SolverConfig(chunk=1), **kw)
    four = mf.recover(y, steps=steps, config=mf.SolverConfig(chunk=4), **kw)
    np.testing.assert_allclose(four.x, one.x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(four.trace, one.trace, rtol=1e-5, atol=1e-5)
    chex.assert_shape(four.trace, (steps, 3))
    # The reported loss is the objective at the returned iterate, however
    # the engine got it (a short chunk's spare evaluation, an n = 0 step,
    # or a loss-only program).
    data = {"params": params, "operator": mf.operators.identity(),
            "noise": mf.noise.gaussian(0.5)}
    want = obj.loss(four.z, y, {**data, "beta": jnp.float32(1.0)})
    for res in (one, four):
      np.testing.assert_allclose(res.loss, want, rtol=1e-5, atol=1e-4)
    sizes.append(step_fn._cache_size())
  # One compile in all: the carry comes out laid out as it went in.
  assert sizes == [1, 1, 1, 1]


def test_restarts_keep_the_min_loss_restart():
  prior, params, _, _ = linear_prior()
  y = jax.random.normal(KEY, (2,) + SHAPE)
  kw = dict(prior=prior, params=params, operator=mf.operators.identity(),
            noise=mf.noise.gaussian(0.5), beta=1.0, steps=3, optimizer=ADAM)
  res = mf.recover(y, config=mf.SolverConfig(
      init="random", init_std=1.0, restarts=4, key=jax.random.PRNGKey(2)),
                   **kw)
  # Recompute each restart's final loss from the same starts.
  z0 = 1.0 * jax.random.normal(jax.random.PRNGKey(2), (4, 2) + SHAPE)
  losses = []
  for r in range(4):
    one = mf.recover(y, config=mf.SolverConfig(init=z0[r]), **kw)
    losses.append(np.asarray(one.loss))
  np.testing.assert_allclose(res.loss, np.min(losses, axis=0), rtol=1e-5)


@pytest.mark.slow  # 15-50 s on an AVX2-only 2-core CPU
def test_z_and_x_parametrisations_agree():
  cfg = mf.flows.RealNVPConfig(image_shape=(4, 4, 1), num_scales=2,
                               num_blocks=1, hidden_channels=8,
                               couplings_per_scale=2, final_couplings=2)
  prior = mf.flows.realnvp(cfg)
  x0 = jax.random.uniform(KEY, (4, 4, 4, 1), minval=0.2, maxval=0.8)
  params = prior.init(KEY, x0)
  leaves, tdef = jax.tree_util.tree_flatten(params)
  params = jax.tree_util.tree_unflatten(tdef, [
      a + 0.05 * jax.random.normal(jax.random.fold_in(KEY, i), a.shape)
      for i, a in enumerate(leaves)])
  y = x0[:2] + 0.05 * jax.random.normal(KEY, (2, 4, 4, 1))
  kw = dict(prior=prior, params=params, operator=mf.operators.identity(),
            noise=mf.noise.gaussian(0.1), beta=0.5, steps=400,
            optimizer=optax.adam(0.01))
  start = mf.SolverConfig(init="measurements")
  rz = mf.recover(y, config=start, **kw)
  rx = mf.recover(y, config=start._replace(parametrization="x"), **kw)
  np.testing.assert_allclose(rz.x, rx.x, atol=2e-3)


def test_one_bit_cs_beats_back_projection_on_a_small_problem():
  # Centred 1-bit CS of a Gaussian signal around 0.5: MAP with the right
  # prior beats the mean plus a scaled back-projection.
  prior, params, mu, l = linear_prior(2)
  params = mf.flows.linear_gaussian_params(0.5 + 0.0 * mu.reshape(SHAPE),
                                           0.2 * l)
  x = prior.sample(params, KEY, 16)
  op = mf.operators.one_bit(mf.operators.gaussian(KEY, 64, SHAPE), 0.5)
  noise = mf.noise.sinusoidal_1d(64, 0.3)
  y = op(x) + noise.sample(seed=jax.random.PRNGKey(1), sample_shape=(16,))
  res = mf.recover(y, prior=prior, params=params, operator=op, noise=noise,
                   beta=1.0, steps=300, optimizer=ADAM)
  bp = mf.solve.measurement_init(y - 0.5 * 0.3, op, SHAPE, -10, 10)
  ours = float(jnp.mean(mf.metrics.mse(x, res.x)))
  base = float(jnp.mean(mf.metrics.mse(x, bp)))
  assert ours < base


@pytest.mark.parametrize("kwargs,match", [
    (dict(y_shape=(2, 5)), "y: got shape"),
    (dict(beta=-1.0), "beta"),
    (dict(nan=True), "non-finite"),
    (dict(noise_shape=(3, 3, 1)), "noise: event shape"),
])
def test_bad_input_is_named(kwargs, match):
  prior, params, _, _ = linear_prior()
  op = mf.operators.identity()
  y = jnp.zeros(kwargs.get("y_shape", (2,) + SHAPE))
  if kwargs.get("nan"):
    y = y.at[0, 0, 0, 0].set(jnp.nan)
  noise = (mf.noise.diagonal(jnp.ones(kwargs["noise_shape"]))
           if "noise_shape" in kwargs else mf.noise.gaussian(1.0))
  with pytest.raises(ValueError, match=match):
    mf.recover(y, prior=prior, params=params, operator=op, noise=noise,
               beta=kwargs.get("beta", 1.0), steps=2)


def test_active_beyond_m_in_sweep_is_named():
  prior, params, _, _ = linear_prior()
  op = mf.operators.gaussian(KEY, 3, SHAPE)
  with pytest.raises(ValueError, match=r"ms: got \[2.0, 5.0\], expected "
                     "integers 0 <= m <= 3"):
    mf.sweep(jnp.zeros((1, 3)), prior=prior, params=params, operator=op,
             noise=mf.noise.gaussian(1.0), betas=[1.0], ms=[2, 5], steps=2)


def test_equal_quality_ratio_recovers_a_known_factor():
  s = np.geomspace(0.1, 2.0, 8)
  base = (s, 30 - 10 * np.log10(s))
  ours = (s, 30 - 10 * np.log10(s / 3.0))   # same PSNR at 3x the noise
  assert mf.metrics.equal_quality_ratio(ours, base) == pytest.approx(3.0,
                                                                      rel=1e-6)
  m = np.geomspace(100, 3200, 6)
  asim = (m, 5 * np.log(m))
  ours_m = (m, 5 * np.log(2 * m))           # ours needs 2x fewer
  assert mf.metrics.equal_quality_ratio(asim, ours_m) == pytest.approx(
      2.0, rel=1e-6)


def test_psnr_units():
  x = jnp.zeros((2, 4, 4, 1))
  np.testing.assert_allclose(mf.metrics.psnr(x, x + 0.1), 20.0, rtol=1e-5)


def test_bora_and_asim_run_through_the_same_machinery():
  prior, params, _, _ = linear_prior()
  y = jax.random.normal(KEY, (2,) + SHAPE)
  ra = mf.recover_asim(y, prior=prior, params=params,
                       operator=mf.operators.identity(), gamma=0.1, steps=20,
                       optimizer=ADAM)
  chex.assert_shape(ra.x, (2,) + SHAPE)
  w = jax.random.normal(KEY, (3, 4))
  gen = lambda z: (z @ w).reshape(SHAPE)
  rb = mf.recover_bora(y, generator=gen, operator=mf.operators.identity(),
                       latent_shape=(3,), lam=0.01, steps=300, optimizer=ADAM,
                       key=KEY, config=mf.SolverConfig(init="random",
                                                       init_std=1.0,
                                                       restarts=2))
  chex.assert_shape(rb.x, (2,) + SHAPE)
  chex.assert_shape(rb.z, (2, 3))
  # Bora's optimum is the regularised least-squares projection.
  a = np.asarray(w).T
  want = np.linalg.solve(a.T @ a + 0.01 * np.eye(3),
                         a.T @ np.asarray(y[0]).reshape(-1))
  np.testing.assert_allclose(rb.z[0], want, atol=1e-3)
  # The same generator with its weights as an argument: same answer, and
  # new weights reuse the compiled program.
  gen_p = lambda w, z: (z @ w).reshape(SHAPE)
  kw = dict(generator=gen_p, operator=mf.operators.identity(),
            latent_shape=(3,), lam=0.01, steps=300, optimizer=ADAM,
            key=KEY, config=mf.SolverConfig(init="random", init_std=1.0,
                                            restarts=2))
  rp = mf.recover_bora(y, generator_params=w, **kw)
  np.testing.assert_allclose(rp.z, rb.z, rtol=1e-5, atol=1e-6)
  step_fn = mf.solve.compiled(
      mf.objectives.bora_objective(gen_p, (3,), SHAPE, True), ADAM,
      mf.solve.default_chunk())[1]
  size = step_fn._cache_size()
  mf.recover_bora(y, generator_params=2.0 * w, **kw)
  assert step_fn._cache_size() == size == 1


def test_uncentred_one_bit_loses_brightness_centred_keeps_it():
  # The trap of uncentred 1-bit CS: sign(A x) is blind to x's scale, so a
  # non-negative image and a brighter copy give identical measurements; the
  # prior then drags every recovery to its densest point (black).  Centring
  # at 0.5 makes the measurements see brightness.
  x = jax.random.uniform(KEY, (2, 4, 4, 1), minval=0.1, maxval=0.45)
  a = mf.operators.gaussian(KEY, 200, (4, 4, 1))
  plain = mf.operators.one_bit(a, 0.0)
  centred = mf.operators.one_bit(a, 0.5)
  np.testing.assert_array_equal(plain(x), plain(2 * x))
  assert np.any(np.asarray(centred(x)) != np.asarray(centred(2 * x)))


def test_flow_noise_is_exact_inside_and_finite_outside_its_support():
  cfg = mf.flows.RealNVPConfig(image_shape=(4, 4, 1), num_scales=1,
                               num_blocks=1, hidden_channels=4,
                               final_couplings=2)
  prior = mf.flows.realnvp(cfg)
  params = prior.init(KEY, jnp.full((2, 4, 4, 1), 0.5))
  n = mf.noise.from_flow(prior, params)
  inside = jax.random.uniform(KEY, (3, 4, 4, 1), minval=0.05, maxval=0.95)
  np.testing.assert_allclose(n.log_prob(inside), prior.log_prob(params, inside),
                             rtol=1e-6)
  outside = inside.at[:, 0, 0, 0].set(-0.5)
  lp = n.log_prob(outside)
  g = jax.grad(lambda d: jnp.sum(n.log_prob(d)))(outside)
  assert np.all(np.isfinite(lp)) and np.all(np.isfinite(g))
  assert np.all(np.asarray(g[:, 0, 0, 0]) > 0)   # points back into the box
  assert np.all(np.asarray(lp) < np.asarray(n.log_prob(inside)))
  # The extension is exactly the clipped density minus penalty * excess^2.
  box = mf.noise._logit_box(prior, 0.01)
  stiff = mf.noise.from_flow(prior, params, penalty=10.0, margin=0.01)
  want = (prior.log_prob(params, jnp.clip(outside, *box))
          - 10.0 * (-0.5 - box[0]) ** 2)
  np.testing.assert_allclose(stiff.log_prob(outside), want, rtol=1e-5)
  for kw, name in (({"penalty": 0.0}, "penalty"), ({"margin": 0.6}, "margin"),
                   ({"margin": -1e-3}, "margin")):
    with pytest.raises(ValueError, match=f"{name}: got"):
      mf.noise.from_flow(prior, params, **kw)


def test_a_step_onto_a_non_finite_loss_is_undone():
  """Uniform noise on [-1, 1] with the prior's mean at 3: Adam's steps
  towards the mean leave the noise's support (loss +inf).  Such a step is
  undone, so the result keeps a finite loss, inside the support, and the
  reported loss is the loss at the returned latent."""
  import distrax
  prior = mf.flows.linear_gaussian(mf.flows.LinearGaussianConfig(SHAPE))
  mu = np.full(SHAPE, 3.0, np.float32)
  params = mf.flows.linear_gaussian_params(mu, np.eye(4, dtype=np.float32))
  unif = distrax.Independent(distrax.Uniform(-jnp.ones(SHAPE),
                                             jnp.ones(SHAPE)), 3)
  y = jnp.zeros((2,) + SHAPE)
  op = mf.operators.identity()
  res = mf.recover(y, prior=prior, params=params, operator=op, noise=unif,
                   beta=1.0, steps=20, optimizer=optax.adam(0.5),
                   config=mf.SolverConfig(
                       init=jnp.broadcast_to(-mu, (2,) + SHAPE)))
  trace = np.asarray(res.trace)
  assert not np.all(np.isfinite(trace))        # it did step outside
  assert np.all(np.asarray(res.skipped) > 0)
  assert np.all(np.isfinite(res.loss))
  assert np.all(np.abs(np.asarray(res.x)) < 1.0)
  again = mf.objectives.map_loss(res.z, y, prior=prior, params=params,
                                 operator=op, noise=unif, beta=1.0)
  np.testing.assert_allclose(res.loss, again, rtol=1e-5)


def gaussian_flow_noise(seed=5):
  """Flow noise N(m, L L^T) through a linear-Gaussian flow."""
  rng = np.random.RandomState(seed)
  l = np.tril(rng.randn(4, 4)) * 0.2 + np.eye(4) * 0.5
  m = rng.randn(*SHAPE) * 0.3
  flow = mf.flows.linear_gaussian(mf.flows.LinearGaussianConfig(SHAPE))
  noise = mf.noise.from_flow(flow, mf.flows.linear_gaussian_params(m, l))
  return noise, m.reshape(-1), l


def test_noise_parametrisation_reaches_the_closed_form_map():
  """y = 0.5 x + δ, x ~ N(μ, Σ), δ ~ N(m, Σ_Δ) as a flow: moving the
  noise latent reaches the Gaussian posterior mode, as the image latent
  does; a sweep over β equals one recover per β."""
  prior, params, mu, l = linear_prior()
  noise, m, ln = gaussian_flow_noise()
  op = mf.operators.scale(0.5)
  y = jax.random.normal(jax.random.PRNGKey(7), (2,) + SHAPE)
  s_inv, sd_inv = np.linalg.inv(l @ l.T), np.linalg.inv(ln @ ln.T)
  kw = dict(prior=prior, params=params, operator=op, noise=noise,
            steps=1500, optimizer=ADAM)
  betas = [1.0, 0.3]
  by_noise = mf.SolverConfig(parametrization="noise")
  grid = mf.sweep(y, betas=betas, config=by_noise, **kw)
  chex.assert_shape(grid.x, (2, 1, 2) + SHAPE)
  chex.assert_shape(grid.z, (2, 1, 2) + SHAPE)
  for i, beta in enumerate(betas):
    res = mf.recover(y, beta=beta, config=by_noise, **kw)
    rz = mf.recover(y, beta=beta, **kw)
    np.testing.assert_allclose(grid.x[i, 0], res.x, rtol=1e-4, atol=1e-5)
    for b in range(2):
      h = 0.25 * sd_inv + beta * s_inv
      rhs = 0.5 * sd_inv @ (np.asarray(y[b]).reshape(-1) - m) + (
          beta * s_inv @ mu)
      want = np.linalg.solve(h, rhs)
      for r in (res, rz):
        np.testing.assert_allclose(np.asarray(r.x[b]).reshape(-1), want,
                                   atol=1e-3)
    # z is the noise latent: its residual gives back x.
    delta, _ = noise.latent_to_noise(res.z)
    np.testing.assert_allclose(res.x, (y - delta) / 0.5, rtol=1e-5,
                               atol=1e-6)


def test_noise_and_image_latents_give_the_same_objective():
  """map_loss_noise(w) = map_loss(z) when G_Δ(w) = y - f(G(z)), for
  RealNVP image and noise flows (inside both supports)."""
  cfg = mf.flows.RealNVPConfig(image_shape=(4, 4, 1), num_scales=1,
                               num_blocks=1, hidden_channels=4,
                               final_couplings=2)
  flow = mf.flows.realnvp(cfg)
  p_img = flow.init(KEY, jnp.full((2, 4, 4, 1), 0.5))
  p_noise = flow.init(jax.random.PRNGKey(1), jnp.full((2, 4, 4, 1), 0.5))
  noise = mf.noise.from_flow(flow, p_noise)
  x = jax.random.uniform(KEY, (3, 4, 4, 1), minval=0.1, maxval=0.9)
  delta = jax.random.uniform(jax.random.PRNGKey(2), x.shape, minval=0.1,
                             maxval=0.5)
  op = mf.operators.scale(0.5)
  y = op(x) + delta
  z = flow.inverse(p_img, x)[0]
  w = flow.inverse(p_noise, delta)[0]
  kw = dict(prior=flow, params=p_img, operator=op, noise=noise, beta=0.7)
  np.testing.assert_allclose(mf.objectives.map_loss_noise(w, y, **kw),
                             mf.objectives.map_loss(z, y, **kw), rtol=1e-5)
  np.testing.assert_allclose(noise.noise_to_latent(delta), w, atol=1e-5)


@pytest.mark.parametrize("what,match", [
    ("gaussian_noise", "noise: parametrization 'noise' needs flow noise"),
    ("matrix_operator", "operator: parametrization 'noise' needs an "
                        "invertible operator"),
    ("unknown", "parametrization: got 'w'"),
])
def test_noise_parametrisation_names_what_it_needs(what, match):
  prior, params, _, _ = linear_prior()
  noise, _, _ = gaussian_flow_noise()
  op = mf.operators.identity()
  y = jnp.zeros((1,) + SHAPE)
  par = "noise"
  if what == "gaussian_noise":
    noise = mf.noise.gaussian(1.0)
  elif what == "matrix_operator":
    op = mf.operators.gaussian(KEY, 4, SHAPE)
    y = jnp.zeros((1, 4))
    noise = mf.noise.gaussian(1.0)
  else:
    par = "w"
  with pytest.raises(ValueError, match=match):
    mf.recover(y, prior=prior, params=params, operator=op, noise=noise,
               steps=2, config=mf.SolverConfig(parametrization=par))


def test_pixel_parametrisation_sweeps_and_stays_finite_outside_the_box():
  """parametrization="x" in a sweep equals one recover per β; on a RealNVP
  (whose pixels live in a box) a step past the box is pulled back by the
  extended log-density, never undone as non-finite."""
  cfg = mf.flows.RealNVPConfig(image_shape=(4, 4, 1), num_scales=1,
                               num_blocks=1, hidden_channels=4,
                               final_couplings=2)
  prior = mf.flows.realnvp(cfg)
  params = prior.init(KEY, jnp.full((2, 4, 4, 1), 0.5))
  x = jax.random.uniform(KEY, (2, 4, 4, 1), minval=0.0, maxval=1.0)
  y = x + 0.3 * jax.random.normal(jax.random.PRNGKey(4), x.shape)
  kw = dict(prior=prior, params=params, operator=mf.operators.identity(),
            noise=mf.noise.gaussian(0.3), steps=30,
            optimizer=optax.adam(0.1),
            config=mf.SolverConfig(init="measurements", init_range=(0.0, 1.0),
                                   parametrization="x"))
  grid = mf.sweep(y, betas=[0.5, 2.0], **kw)
  for i, beta in enumerate([0.5, 2.0]):
    res = mf.recover(y, beta=beta, **kw)
    np.testing.assert_allclose(grid.x[i, 0], res.x, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(res.skipped) == 0)
    assert np.all(np.isfinite(np.asarray(res.trace)))
  # Far outside the box the loss is finite and its gradient points back.
  far = jnp.full((1, 4, 4, 1), 1.5)
  g = jax.grad(lambda v: jnp.sum(mf.objectives.map_loss_x(
      v, y[:1], prior=prior, params=params, operator=kw["operator"],
      noise=kw["noise"], beta=1.0)))(far)
  assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g) > 0)


def test_noise_parametrisation_starts_from_the_measurements_residual():
  """init="measurements" under parametrization="noise" starts at the noise
  latent of y - f(x0), x0 the clipped back-projection: with a zero step
  the result is x0 itself."""
  prior, params, _, _ = linear_prior()
  noise, _, _ = gaussian_flow_noise()
  op = mf.operators.scale(0.5)
  y = 0.3 * jax.random.normal(jax.random.PRNGKey(8), (3,) + SHAPE)
  res = mf.recover(y, prior=prior, params=params, operator=op, noise=noise,
                   steps=1, optimizer=optax.sgd(0.0),
                   config=mf.SolverConfig(init="measurements",
                                          parametrization="noise"))
  x0 = mf.solve.measurement_init(y, op, SHAPE)
  np.testing.assert_allclose(res.x, x0, atol=1e-5)


@pytest.mark.slow  # about 40 s on an AVX2-only 2-core CPU
def test_asim_over_pixels_is_asim_over_latents():
  """Asim et al.'s loss moved in pixel space (``asim_loss_x``) equals its
  loss over z at x = G(z) inside the flow's box, stays finite with a
  gradient pointing back outside it, and both parametrisations of
  ``recover_asim`` reach the same image."""
  cfg = mf.flows.RealNVPConfig(image_shape=(4, 4, 1), num_scales=2,
                               num_blocks=1, hidden_channels=8,
                               couplings_per_scale=2, final_couplings=2)
  prior = mf.flows.realnvp(cfg)
  x0 = jax.random.uniform(KEY, (2, 4, 4, 1), minval=0.2, maxval=0.8)
  params = prior.init(KEY, x0)
  z, _ = prior.inverse(params, x0)
  y = x0 + 0.05 * jax.random.normal(jax.random.PRNGKey(3), x0.shape)
  op = mf.operators.identity()
  lz = mf.objectives.asim_loss(z, y, prior=prior, params=params, operator=op,
                               gamma=0.7)
  lx = mf.objectives.asim_loss_x(x0, y, prior=prior, params=params,
                                 operator=op, gamma=0.7)
  np.testing.assert_allclose(lx, lz, rtol=1e-4)
  far = jnp.full((1, 4, 4, 1), 1.5)
  g = jax.grad(lambda v: jnp.sum(mf.objectives.asim_loss_x(
      v, y[:1], prior=prior, params=params, operator=op, gamma=0.7)))(far)
  assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g) > 0)
  kw = dict(prior=prior, params=params, operator=op, gamma=0.1, steps=400,
            optimizer=optax.adam(0.01))
  start = mf.SolverConfig(init="measurements")
  rz = mf.recover_asim(y, config=start, **kw)
  rx = mf.recover_asim(y, config=start._replace(parametrization="x"), **kw)
  np.testing.assert_allclose(rz.x, rx.x, atol=3e-3)
  with pytest.raises(ValueError, match="parametrization: got 'noise'"):
    mf.recover_asim(y, config=start._replace(parametrization="noise"), **kw)


def test_per_example_operators_equal_separate_recoveries():
  """``operators.batched``: each image its own mask, in one batch (with
  restarts flattened in front), equals recovering each image alone with
  its mask from the same starts."""
  cfg = mf.flows.RealNVPConfig(image_shape=(4, 4, 1), num_scales=2,
                               num_blocks=1, hidden_channels=4,
                               couplings_per_scale=1, final_couplings=1)
  prior = mf.flows.realnvp(cfg)
  params = prior.init(KEY, jnp.full((2, 4, 4, 1), 0.5))
  masks = [mf.operators.mask(jax.random.PRNGKey(i), (4, 4, 1), 0.6)
           for i in range(3)]
  op = mf.operators.batched(masks)
  x = jax.random.uniform(KEY, (3, 4, 4, 1), minval=0.2, maxval=0.8)
  y = op(x)
  for i, m in enumerate(masks):
    np.testing.assert_allclose(y[i], m(x[i:i + 1])[0])
  z0 = 0.3 * jax.random.normal(jax.random.PRNGKey(7), (2, 3, 4, 4, 1))
  kw = dict(prior=prior, params=params, noise=mf.noise.gaussian(0.1),
            beta=0.5, steps=10, optimizer=ADAM)
  together = mf.recover(y, operator=op, config=mf.SolverConfig(
      init=z0, restarts=2), **kw)
  for i, m in enumerate(masks):
    alone = mf.recover(y[i:i + 1], operator=m, config=mf.SolverConfig(
        init=z0[:, i:i + 1], restarts=2), **kw)
    np.testing.assert_allclose(together.x[i], alone.x[0], rtol=1e-4,
                               atol=1e-5)
  with pytest.raises(ValueError, match="ops: got operators of kinds"):
    mf.operators.batched([masks[0], mf.operators.identity()])
  with pytest.raises(ValueError, match="operator: a mask of shape"):
    mf.recover(jnp.zeros((3, 8, 8, 1)), operator=mf.operators.batched(
        [mf.operators.mask(KEY, (8, 8, 1))] * 3), **kw)


def test_one_step_per_call_returns_images_without_a_decoder():
  """With one step per call, the spare final step gives the images of the
  returned latents (and of each example's best restart), so no decoder
  program is made; where a final loss is not finite the engine goes back
  to the last finite iterate and decodes that instead."""
  from mapflow.solve import engine
  prior, params, _, _ = linear_prior()
  op = mf.operators.gaussian(KEY, 3, SHAPE)
  y = op(prior.sample(params, KEY, 3))
  engine.clear_caches()
  res = mf.recover(y, prior=prior, params=params, operator=op,
                   noise=mf.noise.gaussian(0.3), beta=1.0, steps=7,
                   optimizer=ADAM, key=KEY,
                   config=mf.SolverConfig(chunk=1, init="random",
                                          restarts=3))
  decoder = engine._decode(mf.objectives.map_objective(prior).to_image)
  assert decoder._cache_size() == 0  # never compiled
  np.testing.assert_allclose(res.x, prior.forward(params, res.z)[0],
                             rtol=1e-5, atol=1e-6)
  # A loss that is not finite at the last iterate (a custom objective).
  obj = mf.objectives.map_objective(prior)

  def loss(v, y, d):
    out = obj.loss(v, y, d)
    # Not finite once a latent leaves [-cap, cap], where Adam's steps of
    # 0.2 take it.
    return jnp.where(jnp.max(jnp.abs(v), axis=(1, 2, 3)) < d["cap"], out,
                     jnp.inf)
  capped = obj._replace(loss=loss)
  data = {"params": params, "operator": op, "noise": mf.noise.gaussian(0.3),
          "beta": 1.0, "cap": 0.6}
  res = mf.minimize(capped, y, data, steps=40, optimizer=optax.adam(0.2),
                    config=mf.SolverConfig(chunk=1))
  assert decoder._cache_size() == 1
  assert np.all(np.isfinite(np.asarray(res.loss)))
  np.testing.assert_allclose(res.x[0], prior.forward(params, res.z[0])[0],
                             rtol=1e-5, atol=1e-6)


def test_the_step_runs_the_flows_forward_once():
  """The images the step returns come from the loss's own forward pass
  (``objectives.loss_from``); XLA did not merge a second one for Glow, whose
  step ran 1.3x slower.  A loss replaced by a plain function loses the link
  and the step computes the images beside it: the same images."""
  cfg = mf.flows.GlowConfig(image_shape=(8, 8, 3), num_levels=2,
                            steps_per_level=1, hidden_channels=8)
  prior = mf.flows.from_config(cfg)
  x = jax.random.uniform(KEY, (2, 8, 8, 3), minval=0.1, maxval=0.9)
  params = prior.init(jax.random.PRNGKey(1), x)
  op = mf.operators.gaussian(KEY, 20, cfg.image_shape)
  traced = []

  def forward(p, z):
    traced.append(z.shape)
    return prior.forward(p, z)
  counted = prior._replace(forward=forward)
  obj = mf.objectives.asim_objective(counted)
  assert mf.objectives.images_with_loss(obj) is not None
  data = {"params": params, "operator": op, "gamma": 0.1}
  one = mf.SolverConfig(chunk=1)
  res = mf.minimize(obj, op(x), data, steps=3, optimizer=ADAM, config=one)
  assert len(traced) == 1
  traced.clear()
  plain = obj._replace(loss=lambda v, y, d: obj.loss(v, y, d))
  res2 = mf.minimize(plain, op(x), data, steps=3, optimizer=ADAM, config=one)
  assert len(traced) == 2
  np.testing.assert_allclose(res.z, res2.z, rtol=0, atol=1e-6)
  np.testing.assert_allclose(res.x, res2.x, rtol=0, atol=1e-6)
  np.testing.assert_allclose(res.x, prior.forward(params, res.z)[0],
                             rtol=1e-5, atol=1e-6)
  # Another to_image is honoured: the loss's images are of the old one.
  shifted = obj._replace(to_image=lambda v, y, d: obj.to_image(v, y, d) + 1)
  assert mf.objectives.images_with_loss(shifted) is None
  res3 = mf.minimize(shifted, op(x), data, steps=3, optimizer=ADAM,
                     config=one)
  np.testing.assert_allclose(res3.x, res.x + 1, rtol=0, atol=1e-5)


def test_params_made_for_another_config_are_refused_before_any_step(tmp_path):
  """recover names the first leaf whose shape the prior's config does not
  imply; the shapes are the ones loading a saved model traced (one trace
  per config, shared)."""
  from mapflow import checkpoint
  cfg = mf.flows.RealNVPConfig(image_shape=(4, 4, 1), num_scales=1,
                               num_blocks=1, hidden_channels=4,
                               couplings_per_scale=1, final_couplings=1)
  wide = dataclasses.replace(cfg, hidden_channels=6)
  x = jnp.full((2, 4, 4, 1), 0.5)
  prior = mf.flows.from_config(cfg)
  kw = dict(prior=prior, operator=mf.operators.identity(),
            noise=mf.noise.gaussian(0.1), steps=2)
  with pytest.raises(ValueError, match=r"params: leaf .*WNConv_0.* has "
                     r"shape \(1, 6\), expected \(1, 4\) for "
                     r"this prior \(RealNVPConfig\)"):
    mf.recover(x, params=mf.flows.from_config(wide).init(KEY, x), **kw)
  deeper = dataclasses.replace(cfg, num_blocks=2)
  with pytest.raises(ValueError, match=r"params: got a pytree of \d+ leaves "
                     r"that does not match"):
    mf.recover(x, params=mf.flows.from_config(deeper).init(KEY, x), **kw)
  # Saved and loaded: recover's check reuses the load's trace.
  params = prior.init(KEY, x)
  checkpoint.save(tmp_path / "m", params, config=cfg)
  loaded, _ = checkpoint.load(tmp_path / "m")
  before = checkpoint._cached_abstract_params.cache_info()
  res = mf.recover(x, params=loaded, **kw)
  after = checkpoint._cached_abstract_params.cache_info()
  assert (after.hits - before.hits, after.misses - before.misses) == (1, 0)
  chex.assert_shape(res.x, x.shape)
