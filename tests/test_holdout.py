"""β from the measurements alone (held-out likelihood), against the
ground-truth oracle, on a problem with a Gaussian prior fitted to smooth
8x8 fields and SINUSOIDAL noise."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mapflow as mf
from mapflow import holdout

H = 8


def _problem():
  rng = np.random.default_rng(0)
  i, j = np.meshgrid(np.arange(H), np.arange(H), indexing="ij")

  def fields(n):
    a, b, c = rng.uniform(-1, 1, (3, n, 1, 1))
    return (0.5 + 0.15 * (a * np.cos(np.pi * i / H) + b * np.cos(np.pi * j / H)
                          + c * np.cos(np.pi * (i + j) / H)))[..., None]
  xs = fields(3000)
  cov = np.cov(xs.reshape(len(xs), -1).T) + 1e-4 * np.eye(H * H)
  prior = mf.flows.linear_gaussian(mf.flows.LinearGaussianConfig((H, H, 1)))
  params = mf.flows.linear_gaussian_params(xs.mean(0), np.linalg.cholesky(cov))
  return prior, params, jnp.asarray(fields(16))


@pytest.mark.parametrize("select,extra", [
    ("select_beta", {}), ("select_beta_recorrupted", {}),
    ("select_beta_recorrupted",
     {"recorrupting": holdout.RecorruptConfig(antithetic=True)})])
def test_choice_without_ground_truth_is_near_the_oracle(select, extra):
  prior, params, x = _problem()
  noise = mf.noise.sinusoidal((H, H, 1), 0.3)
  y = x + noise.sample(seed=jax.random.PRNGKey(1), sample_shape=(16,))
  betas = [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
  kw = dict(prior=prior, params=params, operator=mf.operators.identity(),
            noise=noise, betas=betas, steps=300, optimizer=optax.adam(0.03))
  choice = getattr(holdout, select)(y, **kw, **extra)
  assert choice.errors.shape == (6,) and choice.per_example.shape == (6, 16)
  grid = mf.sweep(y, **kw)
  psnr = [float(jnp.mean(mf.metrics.psnr(x, grid.x[k, 0])))
          for k in range(len(betas))]
  chosen = psnr[betas.index(choice.beta)]
  assert chosen > max(psnr) - 0.5, (choice.beta, psnr)
  # A β far off (the grid's ends) predicts worse.
  assert choice.errors[0] > choice.errors.min()
  assert choice.errors[-1] > choice.errors.min()
  if select == "select_beta_recorrupted":
    # Nothing held out; the returned MAP is the chosen β's, fitted to y.
    assert choice.keep is None
    np.testing.assert_allclose(
        np.asarray(choice.x).reshape(x.shape),
        np.asarray(grid.x[betas.index(choice.beta), 0]), atol=1e-5)


def test_heldout_needs_a_factorising_noise_and_a_share():
  prior, params, x = _problem()
  flow_noise = mf.noise.from_flow(prior, params)
  with pytest.raises(ValueError, match="noise: got FlowNoise"):
    holdout.select_beta(x, prior=prior, params=params,
                        operator=mf.operators.identity(), noise=flow_noise,
                        betas=[1.0])
  with pytest.raises(ValueError, match="fraction: got 1.0"):
    holdout.holdout_keep((4,), holdout.HoldoutConfig(fraction=1.0))
  keep = holdout.holdout_keep((10, 10, 1))
  assert int(jnp.sum(keep == 0)) == 20


def test_masked_operator_leaves_entries_out_of_the_loss_and_the_start():
  op = mf.operators.masked(mf.operators.identity(),
                           jnp.array([[1.0, 0.0], [1.0, 1.0]])[..., None])
  y = jnp.array([[[1.0], [100.0]], [[3.0], [5.0]]])[None]
  # The held-out entry (100) is replaced by the mean of its kept
  # neighbours (here all three).
  np.testing.assert_allclose(op.back_project(y)[0, 0, 1, 0], 3.0)
  far = np.zeros((1, 9, 9, 1))
  far[0, 0, 0] = 1.0
  keep = np.zeros((9, 9, 1))
  keep[0, 0] = keep[8, 8] = 1.0
  filled = mf.operators.masked(mf.operators.identity(), keep).back_project(
      jnp.asarray(far))
  # Near the kept corner at 1: 1; near the kept corner at 0: 0; between,
  # with no kept neighbour, the mean of the kept ones (0.5).
  np.testing.assert_allclose(filled[0, 1, 1, 0], 1.0)
  np.testing.assert_allclose(filled[0, 7, 7, 0], 0.0)
  np.testing.assert_allclose(filled[0, 4, 4, 0], 0.5)
  # Rows of a matrix are dropped, not filled.
  g = mf.operators.gaussian(jax.random.PRNGKey(0), 3, (2, 2, 1))
  rows = mf.operators.masked(g, jnp.array([1.0, 0.0, 1.0]))
  yv = jnp.array([[1.0, 7.0, 2.0]])
  np.testing.assert_allclose(rows.back_project(yv),
                             g.back_project(yv * jnp.array([1.0, 0.0, 1.0])),
                             rtol=1e-6)
  loss = mf.objectives.map_loss_x(
      jnp.zeros((1, 2, 2, 1)), y, prior=mf.flows.linear_gaussian(
          mf.flows.LinearGaussianConfig((2, 2, 1))),
      params=mf.flows.linear_gaussian_params(np.zeros((2, 2, 1)),
                                             np.eye(4)),
      operator=op, noise=mf.noise.gaussian(1.0), beta=0.0)
  # Only the three kept entries count: (1 + 9 + 25) / 2 + 3 log √(2π).
  np.testing.assert_allclose(loss, 17.5 + 1.5 * np.log(2 * np.pi), rtol=1e-5)


def test_composed_mask_lies_over_the_composed_output():
  """A composition's mask covers its own output: the inner one's carries
  over only through an entrywise outer operator; a matrix outer mixes the
  masked intermediate into real measurements."""
  ops = mf.operators
  keep = jnp.array([[1.0, 0.0], [1.0, 1.0]])[..., None]
  pix = ops.masked(ops.identity(), keep)
  g = ops.gaussian(jax.random.PRNGKey(0), 5, (2, 2, 1))
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 2, 2, 1))
  cases = {
      "matrix after pixel mask": (ops.compose(g, pix), None),
      "first 3 rows after pixel mask": (
          ops.compose(ops.with_active(g, 3), pix), [1, 1, 1, 0, 0]),
      "scale after pixel mask": (ops.compose(ops.scale(2.0), pix), keep),
      "pixel mask after scale": (ops.compose(pix, ops.scale(2.0)), keep),
      "masked rows, then scaled": (
          ops.compose(ops.scale(2.0), ops.masked(g, jnp.array(
              [1.0, 0.0, 1.0, 1.0, 0.0]))), [1, 0, 1, 1, 0]),
      "two pixel masks": (ops.compose(ops.masked(ops.identity(), keep[::-1]),
                                      pix), keep * keep[::-1]),
      # A sign is entrywise: the inner mask carries, though a centred sign
      # turns the left-out zeros into -1.
      "sign after pixel mask": (
          ops.compose(ops.one_bit(ops.identity(), 0.5), pix), keep),
      "sign after the first 3 rows": (
          ops.compose(ops.one_bit(ops.identity()), ops.with_active(g, 3)),
          [1, 1, 1, 0, 0]),
      "a mask per example after pixel mask": (
          ops.compose(ops.batched([ops.mask(jax.random.PRNGKey(i), (2, 2, 1))
                                   for i in range(3)]), pix), keep),
  }
  for name, (op, want) in cases.items():
    got = op.measurement_mask()
    if want is None:
      assert got is None, name
      continue
    want = np.asarray(want, np.float32)
    assert got.shape == op(x).shape[1:], name
    np.testing.assert_array_equal(np.asarray(got), want, err_msg=name)
    if not ops.is_one_bit(op):
      # Masked entries are zero in the output, as the mask promises.
      assert np.all(np.asarray(op(x))[:, want == 0] == 0), name
  assert ops.is_entrywise(ops.compose(ops.scale(2.0), pix))
  assert ops.is_entrywise(ops.one_bit(ops.identity(), 0.5))
  assert not ops.is_entrywise(ops.compose(g, pix))
  assert not ops.is_entrywise(ops.one_bit(g))

def test_noise_scale_from_residuals_with_a_known_shape():
  """r² = e + s² u² on held-out entries: least squares on the std map's
  shape recovers s beside a uniform prediction error; a constant shape
  cannot, and says so (an upper bound)."""
  rng = np.random.default_rng(0)
  shape = (28, 28, 1)
  unit = np.asarray(mf.noise.sinusoidal_std_map(shape, 1.0))
  fx_true = rng.uniform(0.2, 0.8, (32,) + shape)
  s = 0.3
  y = fx_true + s * unit * rng.normal(size=fx_true.shape)
  fx = fx_true + 0.05 * rng.normal(size=fx_true.shape)   # the MAP's error
  keep = holdout.holdout_keep(shape)
  est = holdout.estimate_noise_scale(unit, y, fx, keep)
  assert est.identifiable
  assert est.scale == pytest.approx(s, rel=0.05)
  assert 0.0 < est.error_var < 3 * 0.05 ** 2
  # Ignoring the error (a plain mean of r²/u²) would overestimate s.
  held = np.asarray(keep) == 0
  naive = np.sqrt(np.mean(((y - fx) ** 2 / unit ** 2)[:, held]))
  assert naive > 1.1 * s
  iso = fx_true + s * rng.normal(size=fx_true.shape)
  worse = fx_true + 0.1 * rng.normal(size=fx_true.shape)
  flat = holdout.estimate_noise_scale(np.ones(shape), iso, worse, keep)
  assert not flat.identifiable and flat.error_var == 0.0
  # An upper bound: sqrt(s² + 0.1²) = 1.054 s, noise and error together.
  assert 1.02 * s < flat.scale < 1.09 * s
  # Residuals that do not follow the shape (noise only where u is small)
  # give no positive slope: the upper bound, flagged, never a scale of 0.
  odd = holdout.estimate_noise_scale(unit, fx_true + 0.1 * (
      unit < unit.mean()) * rng.normal(size=fx_true.shape), fx_true, keep)
  assert not odd.identifiable and odd.scale > 0
  with pytest.raises(ValueError, match="fx: got non-finite"):
    holdout.estimate_noise_scale(unit, y, fx * np.nan, keep)
  with pytest.raises(ValueError, match="y: got non-finite"):
    holdout.estimate_noise_scale(unit, y * np.inf, fx, keep)


def test_beta_and_scale_from_the_measurements_alone():
  """With only the noise's shape known, the held-out choice at s = 1 picks
  β·s², and its MAP's residuals give s near the truth."""
  prior, params, x = _problem()
  s = 0.3
  # RADIAL: SINUSOIDAL's rows are all alike at H = 8 (sin(pi k) = 0).
  noise = mf.noise.radial((H, H, 1), s)
  y = x + noise.sample(seed=jax.random.PRNGKey(1), sample_shape=(16,))
  unit = mf.noise.radial((H, H, 1), 1.0)
  betas = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
  choice, est = holdout.select_beta_and_scale(
      y, prior=prior, params=params, operator=mf.operators.identity(),
      unit_noise=unit, betas=betas, steps=300, optimizer=optax.adam(0.03),
      holdout=holdout.HoldoutConfig(fraction=0.3))
  assert est.identifiable
  assert est.scale == pytest.approx(s, rel=0.25), est
  assert choice.x.shape == x.shape
  with pytest.raises(ValueError, match="unit_noise: got a noise of non-zero"):
    holdout.select_beta_and_scale(
        y[:, :, 0, 0], prior=prior, params=params,
        operator=mf.operators.identity(),
        unit_noise=mf.noise.sinusoidal_1d(H, 1.0), betas=betas)


def test_recorrupted_error_is_unbiased_for_any_denoiser():
  """For a nonlinear denoiser g, the recorrupted estimate's mean over many
  draws equals the true mean squared error of g(y_fit), and dropping the
  offset (the check's own noise power) would be far off."""
  rng = np.random.default_rng(3)
  n = 4000
  x = jnp.asarray(rng.uniform(0.1, 0.9, (n, 4, 4, 1)), jnp.float32)
  std = jnp.asarray(rng.uniform(0.02, 0.3, (4, 4, 1)), jnp.float32)
  noise = mf.noise.diagonal(std)
  y = x + noise.sample(seed=jax.random.PRNGKey(0), sample_shape=(n,))
  split = holdout.recorrupt(noise, y, jax.random.PRNGKey(1), alpha=0.5)
  # Its fitting noise is the same shape, sqrt(1 + α²) times the std.
  np.testing.assert_allclose(split.noise_fit.std_map, std * np.sqrt(1.25),
                             rtol=1e-6)
  g = lambda v: jnp.clip(0.6 * v + 0.2, 0.15, 0.85)
  est = np.asarray(holdout.recorrupted_error(split, g(split.y_fit)))
  true = np.asarray(jnp.mean((g(split.y_fit) - x) ** 2, axis=(1, 2, 3)))
  d = est - true
  assert abs(d.mean()) < 4 * d.std() / np.sqrt(n), (d.mean(), true.mean())
  assert np.mean(split.offset) > 20 * abs(d.mean()) + true.mean()


def test_recorrupting_needs_gaussian_noise_and_real_valued_measurements():
  prior, params, x = _problem()
  with pytest.raises(ValueError, match="noise: got FlowNoise"):
    holdout.recorrupt(mf.noise.from_flow(prior, params), x,
                      jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="alpha: got 0"):
    holdout.recorrupt(mf.noise.gaussian(0.1), x, jax.random.PRNGKey(0), 0)
  op = mf.operators.one_bit(mf.operators.gaussian(
      jax.random.PRNGKey(0), 10, (H, H, 1)), 0.5)
  with pytest.raises(ValueError, match="1-bit"):
    holdout.select_beta_recorrupted(
        jnp.ones((2, 10)), prior=prior, params=params, operator=op,
        noise=mf.noise.gaussian(0.1), betas=[1.0])


def test_antithetic_recorruption_stays_unbiased_and_halves_a_comparisons_spread():
  """Fitting with z and -z and averaging keeps the estimate unbiased; on the
  difference between two denoisers (what a choice rests on) its spread is
  well under one draw's, below the 1/√2 a second independent draw gives."""
  rng = np.random.default_rng(3)
  n = 4000
  x = jnp.asarray(rng.uniform(0.1, 0.9, (n, 4, 4, 1)), jnp.float32)
  noise = mf.noise.diagonal(
      jnp.asarray(rng.uniform(0.02, 0.1, (4, 4, 1)), jnp.float32))
  y = x + noise.sample(seed=jax.random.PRNGKey(0), sample_shape=(n,))
  shrink = lambda v, w: (1 - w) * v + w * jnp.mean(v, axis=(1, 2, 3),
                                                 keepdims=True)
  split = holdout.recorrupt(noise, y, jax.random.PRNGKey(1))
  flip = holdout.mirrored(split, y)
  np.testing.assert_allclose(flip.y_fit - y, y - split.y_fit, atol=1e-6)

  def gap(sp):  # estimated and true difference of the two denoisers' MSE
    est = (holdout.recorrupted_error(sp, shrink(sp.y_fit, 0.2))
           - holdout.recorrupted_error(sp, shrink(sp.y_fit, 0.5)))
    true = (jnp.mean((shrink(sp.y_fit, 0.2) - x) ** 2, axis=(1, 2, 3))
            - jnp.mean((shrink(sp.y_fit, 0.5) - x) ** 2, axis=(1, 2, 3)))
    return np.asarray(est - true)
  one, other = gap(split), gap(flip)
  pair = (one + other) / 2
  assert abs(pair.mean()) < 4 * pair.std() / np.sqrt(n)
  assert pair.std() < 0.65 * one.std(), (pair.std(), one.std())


def _white_noise_flow(sigma):
  """N(0, σ² I) on H x H as a flow (linear Gaussian), so its noise model is
  a ``FlowNoise``: it neither factorises nor can be recorrupted."""
  flow = mf.flows.linear_gaussian(mf.flows.LinearGaussianConfig((H, H, 1)))
  params = mf.flows.linear_gaussian_params(np.zeros((H, H, 1)),
                                           sigma * np.eye(H * H))
  return mf.noise.from_flow(flow, params)


def test_residual_typicality_is_the_discrepancy_principle_for_gaussian_noise():
  sigma, d = 0.2, H * H
  noise = mf.noise.gaussian(sigma, (H, H, 1))
  rng = np.random.default_rng(3)
  examples = sigma * rng.standard_normal((50, H, H, 1))
  y = rng.uniform(0, 1, (7, H, H, 1))
  fx = y - 0.7 * sigma * rng.standard_normal((7, H, H, 1))
  rate = holdout.noise_log_density_rate(noise, examples)
  const = -0.5 * np.log(2 * np.pi * sigma ** 2)
  np.testing.assert_allclose(
      rate, const - np.mean(np.sum(examples ** 2, (1, 2, 3))) / (2 * d
                                                                 * sigma ** 2),
      rtol=1e-5)
  gap = holdout.residual_typicality(noise, y, fx, rate)
  # Morozov's form: half the difference of the mean squared norms per entry
  # in units of σ².
  sq = lambda a: np.mean(np.sum(a ** 2, (1, 2, 3))) / (d * sigma ** 2)
  np.testing.assert_allclose(gap, 0.5 * abs(sq(y - fx) - sq(examples)),
                             rtol=1e-4)
  # The same through a flow's density (a linear Gaussian flow).
  flow_noise = _white_noise_flow(sigma)
  np.testing.assert_allclose(
      holdout.residual_typicality(flow_noise, y, fx,
                                  holdout.noise_log_density_rate(flow_noise,
                                                                 examples)),
      gap, rtol=1e-4)
  with pytest.raises(ValueError, match=r"examples: got shape \(50, 8, 8\)"):
    holdout.noise_log_density_rate(noise, examples[..., 0])
  with pytest.raises(ValueError, match="fx: got shape"):
    holdout.residual_typicality(noise, y, fx[:3], rate)


def test_typical_residual_choice_is_near_the_oracle_for_flow_noise():
  """A flow's noise (white, as a linear Gaussian flow) admits neither
  held-out entries nor recorruption; the β whose residuals are as
  probable as held-out noise's recovers within 0.5 dB of the best (here
  0.24 dB).  As Morozov's principle does, it leans to a stronger prior."""
  prior, params, x = _problem()
  sigma = 0.1
  noise = _white_noise_flow(sigma)
  with pytest.raises(ValueError, match="noise: got FlowNoise"):
    holdout.check_factorises(noise)
  with pytest.raises(ValueError, match="noise: got FlowNoise"):
    holdout.gaussian_std(noise)
  y = x + noise.sample(seed=jax.random.PRNGKey(1), sample_shape=(16,))
  examples = noise.sample(seed=jax.random.PRNGKey(2), sample_shape=(64,))
  betas = [0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
  kw = dict(prior=prior, params=params, operator=mf.operators.identity(),
            noise=noise, betas=betas, steps=300, optimizer=optax.adam(0.03))
  choice = holdout.select_beta_typical(y, noise_examples=examples, **kw)
  assert choice.errors.shape == (7,) and choice.per_example.shape == (7, 16)
  grid = mf.sweep(y, **kw)
  psnr = [float(jnp.mean(mf.metrics.psnr(x, grid.x[k, 0])))
          for k in range(len(betas))]
  assert psnr[betas.index(choice.beta)] > max(psnr) - 0.5, (choice.beta, psnr)
  assert choice.beta >= betas[int(np.argmax(psnr))]
  # Too weak a prior overfits (residuals too probable), too strong a one
  # underfits (too improbable): the grid's ends are the least typical.
  assert choice.per_example[0].mean() > 0 > choice.per_example[-1].mean()
  assert choice.errors[0] > choice.errors.min() < choice.errors[-1]
  np.testing.assert_allclose(np.asarray(choice.x),
                             np.asarray(grid.x[betas.index(choice.beta), 0]),
                             atol=1e-5)


def test_heldout_error_counts_only_measured_entries():
  """Rows past a Gaussian matrix's ``active`` count are not measurements:
  with the operator's mask the held-out error equals the one computed on
  the active rows alone; without it the same noise-only term joins every
  configuration's error and squeezes their ratio toward 1."""
  key = jax.random.PRNGKey(0)
  shape = (4, 4, 1)
  full = mf.operators.gaussian(key, 64, shape)
  op = mf.operators.with_active(full, 8)
  noise = mf.noise.sinusoidal_1d(64, 1.0)
  x = jax.random.uniform(jax.random.PRNGKey(1), (3,) + shape)
  y = op(x) + noise.sample(seed=jax.random.PRNGKey(2), sample_shape=(3,))
  keep = holdout.holdout_keep((64,))
  mask = op.measurement_mask()
  assert float(jnp.sum((1 - keep) * mask)) >= 1  # some active rows held out
  good, bad = x, 1.0 - x
  with_mask = [holdout.heldout_error(noise, y, op(v), keep, mask)
               for v in (good, bad)]
  # The same error, by hand, over the active rows alone.
  act = np.arange(64) < 8
  held = (1 - np.asarray(keep))[act]
  mu = np.broadcast_to(np.asarray(holdout.noise_mean(noise)), (64,))[act]
  for v, got in zip((good, bad), with_mask):
    r2 = np.square(np.asarray(y)[:, act] - np.asarray(op(v))[:, act] - mu)
    np.testing.assert_allclose(got, (r2 * held).sum(1) / held.sum(),
                               rtol=1e-5)
  without = [holdout.heldout_error(noise, y, op(v), keep) for v in (good, bad)]
  ratio = lambda e: float(jnp.mean(e[1]) / jnp.mean(e[0]))
  assert ratio(with_mask) > ratio(without) > 1.0, (ratio(with_mask),
                                                   ratio(without))


def test_heldout_error_refuses_a_holdout_of_no_measured_entry():
  """With 3 active rows of 64, a 20% hold-out may hold none of them out:
  every configuration would score 0 error, a silent tie."""
  shape = (4, 4, 1)
  op = mf.operators.with_active(
      mf.operators.gaussian(jax.random.PRNGKey(0), 64, shape), 3)
  keep = jnp.ones((64,)).at[10:23].set(0.0)  # rows 10-22 held out
  noise = mf.noise.sinusoidal_1d(64, 1.0)
  x = jnp.full((2,) + shape, 0.5)
  y = op(x)
  with pytest.raises(ValueError, match="no measured entry is held out"):
    holdout.heldout_error(noise, y, op(x), keep, op.measurement_mask())


def test_holdouts_that_would_tie_every_configuration_are_refused():
  """Each of these had returned the same error for every configuration
  (or nan / inf), so a selection silently took the first β."""
  noise = mf.noise.gaussian(0.1, (4,))
  y = jnp.ones((2, 4))
  with pytest.raises(ValueError, match="y: got 1 measurement entry"):
    holdout.holdout_keep((1,))
  with pytest.raises(ValueError, match="keep: holds no entry out"):
    holdout.heldout_error(noise, y, y, jnp.ones(4))
  with pytest.raises(ValueError, match="keep: got values other than 0 and 1"):
    holdout.heldout_error(noise, y, y, jnp.array([2.0, 0.0, 1.0, 1.0]))
  with pytest.raises(ValueError, match="keep: got shape"):
    holdout.heldout_error(noise, y, y, jnp.array([0.0, 1.0, 1.0]))
  keep = jnp.array([0.0, 1.0, 0.0, 1.0])
  with pytest.raises(ValueError, match="keep: holds no entry out"):
    holdout.estimate_noise_scale(jnp.ones(4), y, y, jnp.ones(4))
  with pytest.raises(ValueError, match="unit_std: got 2 held-out entries"):
    holdout.estimate_noise_scale(jnp.zeros(4), y, y, keep)
  with pytest.raises(ValueError, match="fx: got shape"):
    holdout.estimate_noise_scale(jnp.ones(4), y, y[:, :3], keep)
  with pytest.raises(ValueError, match="examples: got non-finite"):
    holdout.noise_log_density_rate(noise, jnp.full((3, 4), jnp.nan))


def test_holdout_keys_and_measurements_are_checked():
  noise = mf.noise.gaussian(0.1, (4,))
  with pytest.raises(ValueError, match="key: got 3, expected a JAX PRNG key"):
    holdout.holdout_keep((4,), holdout.HoldoutConfig(key=3))
  with pytest.raises(ValueError, match="key: got 0, expected a JAX PRNG key"):
    holdout.recorrupt(noise, jnp.ones((2, 4)), 0)
  with pytest.raises(ValueError, match=r"y: got shape \(2, 5\)"):
    holdout.recorrupt(noise, jnp.ones((2, 5)), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="y: got non-finite values"):
    holdout.recorrupt(noise, jnp.ones((2, 4)).at[0, 1].set(jnp.nan),
                      jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="alpha: got True"):
    holdout.recorrupt(noise, jnp.ones((2, 4)), jax.random.PRNGKey(0), True)
  # Typed keys and NumPy numbers are fine.
  split = holdout.recorrupt(noise, jnp.ones((2, 4)), jax.random.key(1),
                            np.float32(0.5))
  assert holdout.holdout_keep((4,), holdout.HoldoutConfig(
      fraction=jnp.float32(0.5))).sum() == 2
  assert split.y_fit.shape == (2, 4)
  prior, params, _ = _problem()
  with pytest.raises(ValueError, match="y: got a list of 2 items"):
    holdout.select_beta([[1.0, 2.0], [3.0]], prior=prior, params=params,
                        operator=mf.operators.identity(), noise=noise,
                        betas=[1.0])
