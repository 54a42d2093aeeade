"""Posterior sampling against closed forms.

An affine flow makes the prior Gaussian, x ~ N(μ, L Lᵀ); with a linear
operator A and diagonal Gaussian noise N(s, D) (a structured std map), the
posterior is Gaussian with

    Σ_post = (Aᵀ D⁻¹ A + (L Lᵀ)⁻¹)⁻¹,
    μ_post = Σ_post (Aᵀ D⁻¹ (y - s) + (L Lᵀ)⁻¹ μ).

The sampler's mean must match μ_post within Monte-Carlo error (from its own
effective sample size) and its covariance Σ_post.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mapflow as mf
from mapflow import holdout, sample

SHAPE = (2, 2, 1)
KEY = jax.random.PRNGKey(0)


def _prior():
  rng = np.random.RandomState(0)
  l = np.tril(rng.randn(4, 4)) * 0.3 + np.eye(4) * 0.8
  mu = rng.randn(*SHAPE) * 0.5
  prior = mf.flows.linear_gaussian(mf.flows.LinearGaussianConfig(SHAPE))
  return prior, mf.flows.linear_gaussian_params(mu, l), mu.reshape(-1), l


@pytest.mark.parametrize("case,leapfrog", [
    ("scale", 1), ("gaussian_matrix", 1), ("gaussian_matrix", 4)])
def test_samples_match_the_closed_form_posterior(case, leapfrog):
  prior, params, mu, l = _prior()
  if case == "scale":
    op = mf.operators.scale(0.7)
    noise = mf.noise.sinusoidal(SHAPE, 0.4)
    a = 0.7 * np.eye(4)
    std, shift = np.asarray(noise.std_map).reshape(-1), 0.0
  else:
    op = mf.operators.gaussian(KEY, 3, SHAPE)
    noise = mf.noise.sinusoidal_1d(3, 0.5)
    a = np.asarray(op.matrix)
    std = np.asarray(noise.std_map).reshape(-1)
    shift = 0.25
  x = prior.sample(params, jax.random.PRNGKey(1), 2)
  y = op(x) + noise.sample(seed=jax.random.PRNGKey(2), sample_shape=(2,))
  n = 6000
  post = sample.sample_posterior(
      y, prior=prior, params=params, operator=op, noise=noise,
      num_samples=n, key=jax.random.PRNGKey(3),
      config=sample.SamplerConfig(
          chains=8, warmup=400,
          target_accept=0.574 if leapfrog == 1 else 0.7),
      leapfrog_steps=leapfrog)
  assert post.samples.shape == (n, 2) + SHAPE
  assert post.mean.shape == post.std.shape == (2,) + SHAPE
  assert post.acceptance.shape == post.ess.shape == (8, 2)
  assert np.all((post.acceptance > 0.3) & (post.acceptance < 0.9))
  s = l @ l.T
  d_inv = np.diag(1.0 / std ** 2)
  cov = np.linalg.inv(a.T @ d_inv @ a + np.linalg.inv(s))
  for b in range(2):
    want = cov @ (a.T @ d_inv @ (np.asarray(y[b]).reshape(-1) - shift) +
                  np.linalg.solve(s, mu))
    draws = np.asarray(post.samples[:, b]).reshape(n, -1)
    ess = float(np.sum(post.ess[:, b]))
    se = np.sqrt(np.diag(cov) / ess)
    np.testing.assert_array_less(np.abs(draws.mean(0) - want), 5 * se + 1e-3)
    got = np.cov(draws.T)
    assert np.linalg.norm(got - cov) / np.linalg.norm(cov) < 0.2, (got, cov)


def test_one_bit_is_refused_and_bad_arguments_are_named():
  prior, params, _, _ = _prior()
  op = mf.operators.one_bit(mf.operators.gaussian(KEY, 3, SHAPE), 0.5)
  y = jnp.ones((1, 3))
  kw = dict(prior=prior, params=params, noise=mf.noise.gaussian(0.1),
            num_samples=4, key=KEY)
  with pytest.raises(ValueError, match="operator: got a 1-bit operator"):
    sample.sample_posterior(y, operator=op, **kw)
  ident = mf.operators.identity()
  y = jnp.zeros((1,) + SHAPE)
  for cfg, match in ((sample.SamplerConfig(chains=0), "chains: got 0"),
                     (sample.SamplerConfig(warmup=-1), "warmup: got -1"),
                     (sample.SamplerConfig(init="mode"), "init: got 'mode'"),
                     (sample.SamplerConfig(step_size=0.0),
                      "step_size: got 0.0"),
                     # These ran before, silently: NaN steps, no jitter.
                     (sample.SamplerConfig(target_accept=2.0),
                      "target_accept: got 2.0"),
                     (sample.SamplerConfig(target_accept=float("nan")),
                      "target_accept: got nan"),
                     (sample.SamplerConfig(init_std=float("nan")),
                      "init_std: got nan"),
                     (sample.SamplerConfig(init_std=-0.1),
                      "init_std: got -0.1"),
                     (sample.SamplerConfig(map_steps=0), "map_steps: got 0")):
    with pytest.raises(ValueError, match=match):
      sample.sample_posterior(y, operator=ident, config=cfg, **kw)
  with pytest.raises(ValueError, match="key: got 0, expected a JAX PRNG key"):
    sample.sample_posterior(y, operator=ident, **{**kw, "key": 0})
  with pytest.raises(ValueError, match="y: got an empty batch"):
    sample.sample_posterior(y[:0], operator=ident, **kw)
  with pytest.raises(ValueError, match="y: got an empty batch"):
    sample.laplace_approximation(jnp.zeros((0,) + SHAPE), y[:0], prior=prior,
                                 params=params, operator=ident,
                                 noise=mf.noise.gaussian(0.1))
  # NumPy integers are counts like any other.
  res = sample.sample_posterior(
      y, operator=ident, **{**kw, "num_samples": np.int64(4)},
      config=sample.SamplerConfig(chains=np.int64(2), warmup=np.int64(2),
                                  init="zeros"))
  assert res.samples.shape == (4, 1) + SHAPE


def test_zero_std_noise_and_bad_conformal_inputs_are_named():
  # A std of 0 had given NaN whitening from the Laplace approximation.
  for make in (lambda: mf.noise.sinusoidal(SHAPE, 0.0),
               lambda: mf.noise.radial(SHAPE, -1.0),
               lambda: mf.noise.sinusoidal_1d(4, float("nan"))):
    with pytest.raises(ValueError, match="scale: got"):
      make()
  with pytest.raises(ValueError, match="std_map: got 1 entries"):
    mf.noise.diagonal(jnp.array([0.1, 0.0, 0.2]))
  x = np.zeros((2, 3))
  with pytest.raises(ValueError, match="x: got 1 non-finite"):
    sample.conformal_std_scale(np.array([[np.nan, 0, 0], [0, 0, 0]]), x,
                               x + 1, 0.5)
  for q in (float("nan"), -1.0, None):
    with pytest.raises(ValueError, match="q: got"):
      sample.conformal_inside(x, x, x + 1, q)
  with pytest.raises(ValueError, match="x, mean, std: got shapes"):
    sample.conformal_inside(x, x[:1], x + 1, 1.0)


def test_effective_sample_size_of_known_chains():
  """White noise has ESS ≈ n; an AR(1) chain with coefficient φ has
  ESS ≈ n (1 - φ) / (1 + φ)."""
  rng = np.random.default_rng(0)
  n = 20000
  white = rng.normal(size=(n, 1))
  assert sample._ess(white)[0] == pytest.approx(n, rel=0.1)
  phi = 0.9
  ar = np.zeros((n, 1))
  for t in range(1, n):
    ar[t] = phi * ar[t - 1] + rng.normal()
  assert sample._ess(ar)[0] == pytest.approx(n * (1 - phi) / (1 + phi),
                                             rel=0.2)


def test_one_leapfrog_step_is_the_mala_step():
  """HMC with a single leapfrog step proposes exactly MALA's move and
  accepts it with the same probability: from one state and key, the two
  kernels agree."""
  prior, params, _, _ = _prior()
  op = mf.operators.gaussian(KEY, 3, SHAPE)
  noise = mf.noise.sinusoidal_1d(3, 0.5)
  y = op(prior.sample(params, jax.random.PRNGKey(1), 2))
  obj = sample.latent_posterior_objective(prior)
  data = {"params": params, "operator": op, "noise": noise}
  step, value_grad, _ = sample._compiled(obj, 0.574)
  begin, leap, end = sample._compiled_hmc(obj, 0.574)
  z = jax.random.normal(jax.random.PRNGKey(4), (3, 2) + SHAPE)
  m = jnp.exp(0.3 * jax.random.normal(jax.random.PRNGKey(5), z.shape))
  u, g = value_grad(z, y, data)
  for t in range(5):
    key = jax.random.PRNGKey(10 + t)
    log_eps = jnp.full(u.shape, np.log(0.05))
    state = (z, u, g, log_eps, m)
    copy = lambda: jax.tree_util.tree_map(jnp.array, state)
    a, acc_a = step(copy(), key, jnp.float32(t), jnp.float32(1.0), y, data)
    s0 = copy()
    p, k0 = begin(s0, key)
    z1, p1, g1, u1 = leap(jnp.array(z), p, jnp.array(g), log_eps, m, y, data)
    b, acc_b = end(s0, z1, p1, g1, u1, k0, jax.random.fold_in(key, 1),
                   jnp.float32(t), jnp.float32(1.0))
    np.testing.assert_array_equal(acc_a, acc_b)
    for x, w in zip(a[:4], b[:4]):
      np.testing.assert_allclose(x, w, rtol=1e-4, atol=1e-5)
    z, u, g = a[0], a[1], a[2]


def test_conformal_scale_covers_what_an_overconfident_std_misses():
  """Truth ~ N(mean, (5 std)²): the stated std's 90% intervals cover ~26%;
  scaled by q from 56 calibration images they cover at least 90% of fresh
  ones' pixels (91.6%: q is the ⌈0.9 · 57 · 36⌉-th smallest score)."""
  rng = np.random.default_rng(0)
  def draw(n):
    std = rng.uniform(0.01, 0.1, (n, 6, 6, 1))
    mean = rng.uniform(0.2, 0.8, std.shape)
    return mean + 5.0 * std * rng.normal(size=std.shape), mean, std
  x, mean, std = draw(56)
  q = mf.conformal_std_scale(x, mean, std, 0.9)
  r = np.abs(x - mean) / std
  k = int(np.ceil(0.9 * 57 * 36))
  assert np.sum(r < q) == k - 1 and np.sum(r <= q) == k
  x2, mean2, std2 = draw(2000)
  inside = lambda s: np.mean(mf.conformal_inside(x2, mean2, std2, s))
  assert inside(1.6449) == pytest.approx(0.26, abs=0.02)
  assert inside(q) == pytest.approx(k / (56 * 36), abs=0.02)
  assert inside(q) > 0.9
  # Too few images for the level: no finite interval, and it takes in all.
  assert mf.conformal_std_scale(x[:5], mean[:5], std[:5], 0.9) == float("inf")
  assert inside(float("inf")) == 1.0
  with pytest.raises(ValueError, match="level: got 1.5"):
    mf.conformal_std_scale(x, mean, std, 1.5)
  with pytest.raises(ValueError, match="x, mean, std: got shapes"):
    mf.conformal_std_scale(x, mean[:3], std, 0.9)


def test_conformal_scale_treats_images_not_pixels_as_the_units():
  """Each image's errors share a random scale, so its pixels are not
  exchangeable units.  Over 4,000 trials of 9 calibration images, the
  pixels' pooled 90% point covers under 90% of a new image's pixels on
  average; q, ranked over images, covers at least 90%."""
  rng = np.random.default_rng(1)
  got = []
  for _ in range(4000):
    r = np.abs(rng.normal(size=(10, 16))) * np.exp(rng.normal(size=(10, 1)))
    cal, new = r[:9], r[9]
    q = mf.conformal_std_scale(cal, np.zeros_like(cal), np.ones_like(cal))
    got.append((np.mean(new <= q), np.mean(new <= np.quantile(cal, 0.9))))
  ours, pooled = np.mean(got, axis=0)
  assert ours >= 0.9 and pooled < 0.89


def _ill_conditioned_case():
  """Three of four directions pinned by low noise: the posterior's
  covariance has condition number ~4e4, and its narrow directions are not
  the coordinate axes."""
  prior, params, mu, l = _prior()
  op = mf.operators.gaussian(KEY, 3, SHAPE)
  noise = mf.noise.sinusoidal_1d(3, 0.02)
  x = prior.sample(params, jax.random.PRNGKey(1), 2)
  y = op(x) + noise.sample(seed=jax.random.PRNGKey(2), sample_shape=(2,))
  a = np.asarray(op.matrix)
  std = np.asarray(noise.std_map).reshape(-1)
  s = l @ l.T
  cov = np.linalg.inv(a.T @ np.diag(1.0 / std ** 2) @ a + np.linalg.inv(s))
  return prior, params, op, noise, y, l, cov


def _posterior_means(prior, params, op, noise, y, l, cov):
  _, _, mu, _ = _prior()
  a = np.asarray(op.matrix)
  std = np.asarray(noise.std_map).reshape(-1)
  shift = np.asarray(noise.mean()).reshape(-1)
  s = l @ l.T
  return [cov @ (a.T @ ((np.asarray(y[b]).reshape(-1) - shift) / std ** 2)
                 + np.linalg.solve(s, mu)) for b in range(len(y))]


def test_laplace_approximation_is_the_gaussian_posterior():
  """Affine flow, linear operator, Gaussian noise: the Gauss-Newton
  Laplace approximation is exact, wherever it is taken."""
  prior, params, op, noise, y, l, cov = _ill_conditioned_case()
  for z0 in (jnp.zeros((2,) + SHAPE),
             jax.random.normal(jax.random.PRNGKey(5), (2,) + SHAPE)):
    lap = mf.laplace_approximation(z0, y, prior=prior, params=params,
                                   operator=op, noise=noise)
    assert lap.whitening.shape == (2, 4, 4)
    assert lap.image.shape == lap.image_std.shape == (2,) + SHAPE
    w = np.asarray(lap.whitening, np.float64)
    for b in range(2):
      np.testing.assert_allclose(l @ w[b] @ w[b].T @ l.T, cov,
                                 rtol=1e-3, atol=1e-6)
      np.testing.assert_allclose(np.asarray(lap.image_std[b]).reshape(-1),
                                 np.sqrt(np.diag(cov)), rtol=1e-3)


def test_distrax_gaussian_noise_is_read_as_its_std():
  """distrax's own independent Gaussians (MultivariateNormalDiag over a
  measurement; Independent of a Normal) give the same Laplace
  approximation and recorrupted splits as mapflow's noise of that std."""
  import distrax
  prior, params, op, noise, y, l, cov = _ill_conditioned_case()
  std, mean = noise.std_map, noise.mean()
  z0 = jnp.zeros((2,) + SHAPE)
  ref = mf.laplace_approximation(z0, y, prior=prior, params=params,
                                 operator=op, noise=noise)
  for theirs in (distrax.MultivariateNormalDiag(mean, std),
                 distrax.Independent(distrax.Normal(mean, std), 1)):
    np.testing.assert_array_equal(mf.noise.gaussian_std(theirs), std)
    lap = mf.laplace_approximation(z0, y, prior=prior, params=params,
                                   operator=op, noise=theirs)
    np.testing.assert_array_equal(lap.whitening, ref.whitening)
    np.testing.assert_array_equal(lap.image_std, ref.image_std)
    a = holdout.recorrupt(noise, y, KEY)
    b = holdout.recorrupt(theirs, y, KEY)
    for u, v in ((a.y_fit, b.y_fit), (a.y_check, b.y_check),
                 (a.offset, b.offset), (a.mean, b.mean),
                 (a.noise_fit.std_map, b.noise_fit.std_map)):
      np.testing.assert_allclose(u, v, rtol=1e-6)
  with pytest.raises(ValueError, match="noise: got Laplace.*distrax"):
    mf.noise.gaussian_std(distrax.Laplace(0.0, 1.0))
  with pytest.raises(ValueError, match=r"batch shape \(2, 2\).*"
                     "reinterpreted_batch_ndims"):
    mf.noise.gaussian_std(distrax.Independent(
        distrax.Normal(jnp.zeros(SHAPE), 0.1), 1))

def test_laplace_approximation_with_image_measurements_and_a_mask():
  """Measurements shaped like the image (identity, some pixels left out)
  under a per-pixel std: W = diag(keep / σ²) over the image, so the
  posterior covariance of x is (W + (L Lᵀ)⁻¹)⁻¹ (K = ∂x/∂z = L)."""
  prior, params, _, l = _prior()
  keep = np.array([1.0, 0.0, 1.0, 1.0]).reshape(SHAPE)
  std = np.array([0.05, 0.2, 0.1, 0.3]).reshape(SHAPE)
  op = mf.operators.masked(mf.operators.identity(), keep)
  noise = mf.noise.diagonal(std)
  y = jax.random.uniform(jax.random.PRNGKey(3), (2,) + SHAPE)
  lap = mf.laplace_approximation(jnp.zeros((2,) + SHAPE), y, prior=prior,
                                 params=params, operator=op, noise=noise)
  w = np.diag(keep.reshape(-1) / std.reshape(-1) ** 2)
  cov = np.linalg.inv(w + np.linalg.inv(l @ l.T))
  for b in range(2):
    wh = np.asarray(lap.whitening[b], np.float64)
    np.testing.assert_allclose(l @ wh @ wh.T @ l.T, cov, rtol=1e-4,
                               atol=1e-7)
    np.testing.assert_allclose(np.asarray(lap.image_std[b]).reshape(-1),
                               np.sqrt(np.diag(cov)), rtol=1e-4)

def test_laplace_approximation_in_chunks_with_an_operator_per_example():
  """Jacobian columns in chunks that do not divide d (the last one padded
  past it), and each example with its own matrix: every example's
  approximation is its own closed-form posterior."""
  prior, params, mu, l = _prior()
  b = 3
  mats = [mf.operators.gaussian(jax.random.PRNGKey(10 + i), 3, SHAPE)
          for i in range(b)]
  op = mf.operators.batched(mats)
  noise = mf.noise.sinusoidal_1d(3, 0.3)
  x = prior.sample(params, jax.random.PRNGKey(1), b)
  y = op(x) + noise.sample(seed=jax.random.PRNGKey(2), sample_shape=(b,))
  std = np.asarray(noise.std_map).reshape(-1)
  s = l @ l.T
  z0 = jax.random.normal(KEY, (b,) + SHAPE)
  whole = mf.laplace_approximation(z0, y, prior=prior, params=params,
                                   operator=op, noise=noise)
  for chunk in (1, 3):
    lap = mf.laplace_approximation(z0, y, prior=prior, params=params,
                                   operator=op, noise=noise, chunk=chunk)
    np.testing.assert_allclose(lap.whitening, whole.whitening, rtol=1e-5,
                               atol=1e-6)
    w = np.asarray(lap.whitening, np.float64)
    for i, m in enumerate(mats):
      a = np.asarray(m.matrix)
      cov = np.linalg.inv(a.T @ np.diag(1 / std ** 2) @ a +
                          np.linalg.inv(s))
      np.testing.assert_allclose(l @ w[i] @ w[i].T @ l.T, cov, rtol=1e-3,
                                 atol=1e-6)
      np.testing.assert_allclose(np.asarray(lap.image_std[i]).reshape(-1),
                                 np.sqrt(np.diag(cov)), rtol=1e-3)
  with pytest.raises(ValueError, match="chunk: got 0"):
    mf.laplace_approximation(z0, y, prior=prior, params=params, operator=op,
                             noise=noise, chunk=0)


def test_laplace_preconditioner_mixes_where_the_diagonal_one_cannot():
  """On the ill-conditioned posterior, the same budget: the diagonal
  adaptation's draws miss the covariance entirely; the whitened chains
  match it, with many times the effective sample size."""
  prior, params, op, noise, y, l, cov = _ill_conditioned_case()
  means = _posterior_means(prior, params, op, noise, y, l, cov)
  n = 2000
  errors, ess = {}, {}
  for pre in ("adaptive", "laplace"):
    post = sample.sample_posterior(
        y, prior=prior, params=params, operator=op, noise=noise,
        num_samples=n, key=jax.random.PRNGKey(3),
        config=sample.SamplerConfig(chains=4, warmup=200),
        preconditioner=pre)
    assert post.samples.shape == (n, 2) + SHAPE
    errors[pre] = [np.linalg.norm(np.cov(np.asarray(
        post.samples[:, b]).reshape(n, -1).T) - cov) / np.linalg.norm(cov)
                   for b in range(2)]
    ess[pre] = post.ess.sum(axis=0)
    if pre == "laplace":  # the centre ẑ is back in the samples
      for b in range(2):
        se = np.sqrt(np.diag(cov) / float(ess[pre][b]))
        np.testing.assert_array_less(
            np.abs(np.asarray(post.samples[:, b]).reshape(n, -1).mean(0) -
                   means[b]), 5 * se + 1e-4)
  assert max(errors["laplace"]) < 0.2, errors
  assert min(errors["adaptive"]) > 0.5, errors
  assert np.all(ess["laplace"] > 4 * ess["adaptive"]), ess


def test_laplace_needs_gaussian_noise_and_a_known_preconditioner():
  prior, params, _, _ = _prior()
  ident = mf.operators.identity()
  y = jnp.zeros((1,) + SHAPE)
  flow_noise = mf.noise.from_flow(prior, params)
  with pytest.raises(ValueError, match="noise: got FlowNoise"):
    mf.laplace_approximation(jnp.zeros((1,) + SHAPE), y, prior=prior,
                             params=params, operator=ident,
                             noise=flow_noise)
  with pytest.raises(ValueError, match="noise: got FlowNoise"):
    sample.sample_posterior(
        y, prior=prior, params=params, operator=ident, noise=flow_noise,
        num_samples=4, key=KEY,
        preconditioner="laplace")
  with pytest.raises(ValueError, match="preconditioner: got 'newton'"):
    sample.sample_posterior(
        y, prior=prior, params=params, operator=ident,
        noise=mf.noise.gaussian(0.1), num_samples=4, key=KEY,
        preconditioner="newton")
  with pytest.raises(ValueError, match="operator: got a 1-bit operator"):
    mf.laplace_approximation(
        jnp.zeros((1,) + SHAPE), jnp.ones((1, 3)), prior=prior,
        params=params, noise=mf.noise.gaussian(0.1),
        operator=mf.operators.one_bit(
            mf.operators.gaussian(KEY, 3, SHAPE), 0.5))
  with pytest.raises(ValueError, match="z0: got 1 non-finite"):
    mf.laplace_approximation(jnp.zeros((1,) + SHAPE).at[0, 0, 0, 0].set(
        jnp.nan), y, prior=prior, params=params, operator=ident,
                             noise=mf.noise.gaussian(0.1))
  with pytest.raises(ValueError, match="z0: got shape"):
    mf.laplace_approximation(jnp.zeros((2,) + SHAPE), y, prior=prior,
                             params=params, operator=ident,
                             noise=mf.noise.gaussian(0.1))
