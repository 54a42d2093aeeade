"""The PyTorch peer (bench.peer_torch) computes mapflow's flows exactly:
the same parameter counts and, with mapflow's params loaded, the same
latents, log-determinants and log-densities.  Skipped without torch."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import mapflow as mf  # noqa: E402
from bench import peer_torch as pt  # noqa: E402

torch.set_num_threads(1)

REALNVP_2 = mf.flows.RealNVPConfig(
    image_shape=(8, 8, 1), num_scales=2, num_blocks=1, hidden_channels=8,
    couplings_per_scale=2, final_couplings=2, scan_layers=False)
REALNVP_3 = mf.flows.RealNVPConfig(
    image_shape=(8, 8, 2), num_scales=3, num_blocks=2, hidden_channels=8,
    couplings_per_scale=1, final_couplings=3, logit_alpha=0.1,
    scan_layers=False)
GLOW = mf.flows.GlowConfig(
    image_shape=(16, 16, 3), num_levels=2, steps_per_level=2,
    hidden_channels=16, coupling="affine", scan_layers=False, seed=3)
GLOW_ADDITIVE = mf.flows.GlowConfig(
    image_shape=(8, 8, 1), num_levels=2, steps_per_level=2,
    hidden_channels=8, coupling="additive", scan_layers=False)


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def _mapflow_count(cfg):
  flow = mf.flows.from_config(cfg)
  shapes = jax.eval_shape(flow.init, jax.random.PRNGKey(0),
                          jnp.zeros((2,) + tuple(cfg.image_shape)))
  return _count(shapes)


@pytest.mark.parametrize("cfg", [
    REALNVP_2, REALNVP_3, GLOW, GLOW_ADDITIVE,
    mf.flows.preset("realnvp_fmnist_cpu"), mf.flows.preset("realnvp_small"),
    mf.flows.preset("glow_fmnist_small")],
    ids=["realnvp2", "realnvp3", "glow", "glow_add", "fmnist_cpu", "small",
         "glow_fmnist"])
def test_param_counts_match(cfg):
  assert pt.from_config(cfg).param_count() == _mapflow_count(cfg)


def test_benchmark_glow_param_count_matches():
  cfg = pt.glow_cs_config()
  assert pt.from_config(cfg).param_count() == _mapflow_count(cfg)


def _random_params(cfg, seed=0):
  """mapflow params, perturbed so every coupling is far from the identity
  (fresh ones start at the identity, which would test little)."""
  flow = mf.flows.from_config(cfg)
  key = jax.random.PRNGKey(seed)
  x0 = jax.random.uniform(key, (4,) + tuple(cfg.image_shape), minval=0.1,
                          maxval=0.9)
  params = flow.init(jax.random.fold_in(key, 1), x0)
  rng = np.random.RandomState(seed)
  params = jax.tree_util.tree_map(
      lambda a: np.asarray(a) + 0.05 * rng.standard_normal(a.shape)
      .astype(np.float32), params)
  return flow, params


def _close(a, b, rtol, atol):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol,
                             atol=atol)


@pytest.mark.parametrize("cfg", [REALNVP_2, REALNVP_3, GLOW, GLOW_ADDITIVE],
                         ids=["realnvp2", "realnvp3", "glow", "glow_add"])
def test_torch_computes_mapflows_flow(cfg):
  flow, params = _random_params(cfg)
  model = pt.load_mapflow_params(pt.from_config(cfg), params)
  rng = np.random.RandomState(1)
  x = rng.uniform(0.02, 0.98, (3,) + tuple(cfg.image_shape)).astype(
      np.float32)
  xt = pt.nhwc_to_nchw(x)

  # Data direction x -> z: latent, log|det| and log-density.
  z_ref, ld_ref = flow.inverse(params, jnp.asarray(x))
  lp_ref = np.asarray(flow.log_prob(params, jnp.asarray(x)))
  with torch.no_grad():
    z, ld = model.inverse(xt)
    lp = model.log_prob(xt).numpy()
  assert np.all(np.isfinite(lp_ref))
  # Far from the identity: the test would notice a missing layer.
  assert np.abs(np.asarray(ld_ref)).max() > 1.0
  _close(z.numpy(), np.transpose(np.asarray(z_ref), (0, 3, 1, 2)), 1e-3,
         1e-3)
  _close(ld.numpy(), ld_ref, 1e-3, 1e-2)
  _close(lp, lp_ref, 1e-3, 1e-2)
  assert np.max(np.abs(lp - lp_ref) / np.abs(lp_ref)) < 1e-3

  # Generator z -> x, both ways round.
  zs = rng.standard_normal((2,) + tuple(cfg.image_shape)).astype(
      np.float32) * 0.7
  x_ref, gld_ref = flow.forward(params, jnp.asarray(zs))
  with torch.no_grad():
    xg, gld = model(pt.nhwc_to_nchw(zs))
    z_back, ild = model.inverse(xg)
  _close(xg.numpy(), np.transpose(np.asarray(x_ref), (0, 3, 1, 2)), 1e-3,
         1e-4)
  _close(gld.numpy(), gld_ref, 1e-3, 1e-2)
  _close(z_back.numpy(), pt.nhwc_to_nchw(zs).numpy(), 1e-3, 1e-3)
  _close(ild.numpy(), -gld.numpy(), 1e-4, 1e-2)

  # And from the data side: G(G^{-1}(x)) = x.
  with torch.no_grad():
    x_back, _ = model(z)
  _close(x_back.numpy(), xt.numpy(), 1e-4, 1e-4)


def test_glow_data_init_matches_mapflows_actnorm():
  """ActNorm's data-dependent init sees the same activations in both."""
  cfg = GLOW
  flow = mf.flows.from_config(cfg)
  x = np.random.RandomState(2).uniform(0.1, 0.9, (4,) + cfg.image_shape)
  params = flow.init(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float32))
  model = pt.from_config(cfg).data_init(pt.nhwc_to_nchw(x.astype(np.float32)))
  ref = np.asarray(params[2]["actnorm"]["log_scale"])        # level 0
  inner = np.asarray(params[3][1]["actnorm"]["log_scale"])   # level 1
  level0 = model.chain.layers[2].layers
  level1 = model.chain.layers[3].inner.layers[1].layers
  for i in range(cfg.steps_per_level):
    _close(level0[i].actnorm.log_scale.detach().numpy(), ref[i], 1e-4, 1e-4)
    _close(level1[i].actnorm.log_scale.detach().numpy(), inner[i], 1e-4,
           1e-4)


def test_load_rejects_a_mismatched_config():
  _, params = _random_params(REALNVP_2)
  other = mf.flows.RealNVPConfig(
      image_shape=(8, 8, 1), num_scales=2, num_blocks=1, hidden_channels=4,
      couplings_per_scale=2, final_couplings=2)
  with pytest.raises(ValueError):
    pt.load_mapflow_params(pt.from_config(other), params)


def test_map_step_matches_mapflows_loss_and_moves_z():
  """One step on a tiny RealNVP: the torch loss at z = 0 equals
  ``map_loss`` at z = 0 for the same y, and Adam moves z."""
  cfg = mf.flows.RealNVPConfig(
      image_shape=(8, 8, 1), num_scales=2, num_blocks=1, hidden_channels=4,
      couplings_per_scale=1, final_couplings=1, scan_layers=False)
  flow, params = _random_params(cfg)
  step, n = pt.map_step_fns("realnvp_sinusoidal", cfg, 2, params=params,
                            device="cpu")
  assert n == _count(params)
  before = step.losses().numpy()
  # The same y through mapflow's objective.
  y = np.asarray(step.y.permute(0, 2, 3, 1).cpu())
  noise = mf.noise.sinusoidal(cfg.image_shape, 0.4)
  ref = mf.objectives.map_loss(
      jnp.zeros((2,) + cfg.image_shape), jnp.asarray(y), prior=flow,
      params=params, operator=mf.operators.identity(), noise=noise, beta=0.5)
  _close(before, ref, 1e-3, 1e-2)
  total = step()
  assert math.isclose(float(total), float(before.sum()), rel_tol=1e-5)
  assert float(step.z.detach().abs().max()) > 0
  assert np.all(np.isfinite(step.losses().numpy()))


def test_asim_step_matches_mapflows_loss():
  cfg = mf.flows.GlowConfig(image_shape=(8, 8, 1), num_levels=2,
                            steps_per_level=1, hidden_channels=4,
                            scan_layers=False)
  flow, params = _random_params(cfg)
  step, _ = pt.map_step_fns("glow_cs", cfg, 2, params=params, m=20,
                            device="cpu")
  z = 0.3 * np.random.RandomState(4).standard_normal((2,) + cfg.image_shape)
  with torch.no_grad():
    step.z.copy_(pt.nhwc_to_nchw(z.astype(np.float32)))
  a = np.asarray(step.a.cpu())  # (m, d) in (C, H, W) column order
  h, w, c = cfg.image_shape
  a_hwc = a.reshape(20, c, h, w).transpose(0, 2, 3, 1).reshape(20, -1)
  op = mf.operators.GaussianMatrix(jnp.asarray(a_hwc))
  y = np.asarray(step.y.cpu())
  ref = mf.objectives.asim_loss(jnp.asarray(z, jnp.float32), jnp.asarray(y),
                                prior=flow, params=params, operator=op,
                                gamma=0.1)
  _close(step.losses().numpy(), ref, 1e-3, 1e-3)
  step()
  assert np.all(np.isfinite(step.losses().numpy()))


def test_train_step_runs_and_learns():
  cfg = mf.flows.RealNVPConfig(
      image_shape=(8, 8, 1), num_scales=2, num_blocks=1, hidden_channels=4,
      couplings_per_scale=1, final_couplings=1)
  x = np.zeros((4, 8, 8, 1), np.uint8) + np.arange(64, dtype=np.uint8).reshape(
      1, 8, 8, 1)
  step, n = pt.train_step_fn(cfg, x, lr=1e-2, device="cpu")
  assert n == _mapflow_count(cfg)
  losses = [float(step()) for _ in range(5)]
  assert all(np.isfinite(losses))
  assert losses[-1] < losses[0]


def test_bench_peer_section_times_both_sides():
  """The bench's peer section at tiny sizes: both sides timed, ratios
  positive, and the report renders its table and targets."""
  from bench import __main__ as bench_main, render, sections
  ctx = sections.Context(dict(bench_main.QUICK, peer_rounds=2,
                              peer_steps=1, peer_realnvp_batch=2,
                              peer_glow_batch=2, peer_train_batch=4))
  res = sections.peer(ctx)
  assert [r["problem"] for r in res["rows"]] == [
      "realnvp_sinusoidal", "glow_cs", "realnvp_train"]
  for r in res["rows"]:
    assert r["params_ours"] == r["params_torch"], r["problem"]
    # Not a clamped difference: a real step time on both sides.
    assert r["ours_s_per_step"] > 1e-6 and r["torch_s_per_step"] > 1e-6
    assert len(r["pairs"]) == 2 and r["ratio"] > 0
  report = {"mode": "quick", "backend": "cpu", "device": "cpu", "devices": 1,
            "jax": "x", "started": "now", "sections": {"peer": res}}
  assert "## Against PyTorch" in sections.markdown(report)
  assert any("vs PyTorch" in t[0] and t[2] != "not measured"
             for t in render.targets(report, None))
