"""Flows: invertibility, log-dets against jacfwd, densities, transforms."""

import dataclasses
import functools
import math

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mapflow as mf
from mapflow.flows import coupling, layers, nets
from mapflow.flows.base import build_chain, init_chain

KEY = jax.random.PRNGKey(0)


@functools.partial(jax.jit, static_argnames="scale")
def perturb(params, key, scale=0.1):
  """Moves every param away from its (often identity) init."""
  leaves, tdef = jax.tree_util.tree_flatten(params)
  # One draw for all leaves: a threefry per leaf makes a program that takes
  # XLA most of a minute to compile on a deep preset (132 leaves).
  noise = jax.random.normal(key, (sum(l.size for l in leaves),))
  out, start = [], 0
  for l in leaves:
    # Square matrices (the 1x1 convs' L and U) get scale / C: a fixed entry
    # scale would make large triangular factors ill-conditioned.
    square = l.ndim >= 2 and l.shape[-1] == l.shape[-2]
    s = scale / l.shape[-1] if square else scale
    eps = noise[start:start + l.size].reshape(l.shape).astype(l.dtype)
    out.append(l + s * eps)
    start += l.size
  return jax.tree_util.tree_unflatten(tdef, out)


def small_configs(shape):
  h = shape[0]
  scales = 2 if h >= 4 else 1
  return {
      "realnvp": mf.flows.RealNVPConfig(
          image_shape=shape, num_scales=scales, num_blocks=1,
          hidden_channels=8, couplings_per_scale=2, final_couplings=2),
      "glow_affine": mf.flows.GlowConfig(
          image_shape=shape, num_levels=2 if h >= 8 else 1,
          steps_per_level=2, hidden_channels=8, coupling="affine"),
      "glow_additive": mf.flows.GlowConfig(
          image_shape=shape, num_levels=1, steps_per_level=2,
          hidden_channels=8, coupling="additive"),
  }


def make_layer(name, shape, key):
  """A data-direction bijector with perturbed params, plus its input."""
  h, w, c = shape
  k1, k2, k3 = jax.random.split(key, 3)
  x = jax.random.normal(k1, (3,) + shape)
  if name == "actnorm":
    p = perturb(layers.actnorm_init(x), k2)
    return layers.ActNorm(p), x
  if name == "invconv":
    p, const = layers.lu_init(c, np.random.RandomState(0))
    p = perturb(jax.tree_util.tree_map(jnp.asarray, p), k2)
    return layers.InvConv1x1(p, const), x
  if name in ("checker_tanh", "checker_additive"):
    kind = name.split("_")[1]
    net = nets.ResNetConditioner(8, 1, 2 * c if kind != "additive" else c)
    step = coupling.MaskedCouplingStep(net, kind)
    const = {"mask": coupling.checkerboard(h, w, 1)}
    p = perturb(step.init(k3, x, const), k2)
    return step.build(p, const), x
  if name.startswith("channel_"):
    kind = name.split("_")[1]
    c2 = c - c // 2
    net = nets.GlowConditioner(8, 2 * c2 if kind != "additive" else c2)
    p = perturb({"net": net.init(k3, x[..., :c // 2])["params"],
                 **({"rescale": jnp.ones((c2,))} if kind == "tanh" else {})},
                k2)
    return coupling.ChannelCoupling(net, p["net"], kind, p.get("rescale")), x
  if name == "squeeze":
    return layers.Squeeze(), x
  if name == "split_apply":
    return layers.SplitApply(layers.ActNorm(perturb(
        layers.actnorm_init(x[..., c // 2:]), k2)), c // 2), x
  if name == "logit":
    return layers.LogitPreprocess(0.05), jax.random.uniform(k1, (3,) + shape)
  if name == "centre":
    return layers.CentrePreprocess(), jax.random.uniform(k1, (3,) + shape)
  raise ValueError(name)


LAYERS = ["actnorm", "invconv", "checker_tanh", "checker_additive",
          "channel_tanh", "channel_sigmoid", "channel_additive", "squeeze",
          "split_apply", "logit", "centre"]
SHAPES = [(4, 4, 2), (4, 4, 3), (8, 8, 3)]


def jacobian_logdet(fn, x):
  """log|det J| of ``fn`` at one event ``x`` via jacfwd, in float64."""
  flat = lambda v: fn(v.reshape(x.shape)).reshape(-1)
  jac = jax.jacfwd(flat)(x.reshape(-1))
  return jnp.linalg.slogdet(jac)[1]


def to64(tree):
  return jax.tree_util.tree_map(
      lambda a: jnp.asarray(a, jnp.float64)
      if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, tree)


@pytest.mark.parametrize("name", LAYERS)
def test_layer_round_trip_and_logdets(name):
  for shape in [(4, 4, 2), (4, 4, 3)]:
    if name.startswith("channel_") and shape[-1] < 2:
      continue
    bij, x = make_layer(name, shape, KEY)
    y, ld = bij.forward_and_log_det(x)
    xr, ild = bij.inverse_and_log_det(y)
    assert float(jnp.max(jnp.abs(xr - x))) <= 1e-4
    np.testing.assert_allclose(ld, -ild, atol=1e-4)
    chex.assert_shape(ld, (3,))


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("shape", [(4, 4, 1), (4, 4, 3), (8, 8, 3)])
def test_layer_logdet_matches_jacfwd(name, shape):
  if name.startswith("channel_") and shape[-1] < 2:
    pytest.skip("channel split needs >= 2 channels")
  if name == "split_apply" and shape[-1] < 2:
    pytest.skip("split needs >= 2 channels")
  with jax.enable_x64(True):
    bij, x = make_layer(name, shape, KEY)
    bij, x = make_layer_64(name, shape)
    _, ld = bij.forward_and_log_det(x[:1])
    want = jacobian_logdet(lambda v: bij.forward(v[None])[0], x[0])
    np.testing.assert_allclose(float(ld[0]), float(want), rtol=1e-6, atol=1e-6)


def make_layer_64(name, shape):
  """``make_layer`` with every param and input in float64."""
  bij, x = make_layer(name, shape, KEY)
  # Rebuild with float64 leaves: the bijectors only hold arrays.
  for attr, val in list(vars(bij).items()):
    if attr.startswith("_") and attr not in ("_event_ndims_in",
                                             "_event_ndims_out"):
      if isinstance(val, (jax.Array, np.ndarray, dict)):
        setattr(bij, attr, to64(val))
      elif isinstance(val, distrax.Bijector):
        for a2, v2 in list(vars(val).items()):
          if isinstance(v2, (jax.Array, np.ndarray, dict)):
            setattr(val, a2, to64(v2))
  return bij, to64(x)


def flow_and_params(cfg, key=KEY, scale=0.05, n=4):
  flow = mf.flows.from_config(cfg)
  x = jax.random.uniform(key, (n,) + cfg.image_shape, minval=0.05,
                         maxval=0.95)
  params = perturb(flow.init(key, x), jax.random.fold_in(key, 1), scale)
  return flow, params, x


@pytest.mark.parametrize("kind", ["realnvp", "glow_affine", "glow_additive"])
@pytest.mark.parametrize("shape", [(4, 4, 1), (4, 4, 3), (8, 8, 3)])
def test_flow_logdet_matches_jacfwd(kind, shape):
  cfg = small_configs(shape)[kind]
  with jax.enable_x64(True):
    flow, params, x = flow_and_params(cfg)
    params = to64(params)
    z = jax.random.normal(KEY, (1,) + shape, jnp.float64) * 0.5

    @jax.jit
    def both(params, z):
      fwd = lambda v: flow.forward(params, v[None])[0][0]
      return flow.forward(params, z)[1][0], jacobian_logdet(fwd, z[0])

    ld, want = both(params, z)
    np.testing.assert_allclose(float(ld), float(want), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("kind", ["realnvp", "glow_affine", "glow_additive"])
@pytest.mark.parametrize("scan", [False, True])
def test_flow_round_trip_and_log_prob(kind, scan):
  cfg = dataclasses.replace(small_configs((8, 8, 3))[kind], scan_layers=scan)
  flow, params, x = flow_and_params(cfg)

  @jax.jit
  def everything(params, x):
    z, ild = flow.inverse(params, x)
    xr, fld = flow.forward(params, z)
    return (z, ild, xr, fld, flow.log_prob(params, x),
            flow.distribution(params).log_prob(x))

  z, ild, xr, fld, lp, dist_lp = everything(params, x)
  chex.assert_shape(z, x.shape)
  assert float(jnp.max(jnp.abs(xr - x))) <= 1e-4
  np.testing.assert_allclose(ild, -fld, rtol=1e-5, atol=1e-3)
  chex.assert_shape(lp, (4,))
  want = mf.flows.standard_normal_log_prob(z) - fld
  np.testing.assert_allclose(lp, want, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(dist_lp, lp, rtol=1e-5, atol=1e-3)


def test_scanned_and_unrolled_agree():
  cfg = small_configs((8, 8, 3))["glow_affine"]
  a = mf.flows.from_config(dataclasses.replace(cfg, scan_layers=False))
  b = mf.flows.from_config(dataclasses.replace(cfg, scan_layers=True))
  _, params, x = flow_and_params(cfg)
  np.testing.assert_allclose(a.log_prob(params, x), b.log_prob(params, x),
                             rtol=1e-5, atol=1e-3)


# The CelebA-HQ presets are the slowest here (30-35 s each): -m slow.
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow)
    if n in ("realnvp_celebahq64_paper", "glow_celebahq256") else n
    for n in sorted(mf.flows.PRESETS)])
def test_presets_round_trip_at_small_size(name):
  cfg = mf.flows.preset(name)
  levels = getattr(cfg, "num_scales", None) or cfg.num_levels
  side = 2 ** levels if isinstance(cfg, mf.flows.GlowConfig) else 2 ** (
      levels - 1)
  side = max(side, 4)
  small = dataclasses.replace(cfg, image_shape=(side, side, cfg.image_shape[2]),
                              hidden_channels=8, scan_layers=True)
  if isinstance(cfg, mf.flows.RealNVPConfig):
    small = dataclasses.replace(small, num_blocks=1)
  else:
    small = dataclasses.replace(small, steps_per_level=2)
  # Enough images that ActNorm's init statistics at 1x1 levels are sane.
  flow, params, x = flow_and_params(small, n=16)

  @jax.jit
  def round_trip(params, x):
    z, logdet = flow.inverse(params, x)
    return flow.forward(params, z)[0], logdet

  # In float64: a deep random flow's float32 round trip drifts by up to
  # ~1e-3 with its conditioning, which would hide a real inverse error.
  with jax.enable_x64(True):
    xr, logdet = round_trip(to64(params), to64(x))
    assert xr.dtype == jnp.float64
    assert float(jnp.max(jnp.abs(xr - x))) <= 1e-9
  assert np.all(np.isfinite(logdet))


def test_new_realnvp_is_identity_on_latent_path():
  cfg = small_configs((8, 8, 1))["realnvp"]
  flow = mf.flows.from_config(cfg)
  x = jax.random.uniform(KEY, (2, 8, 8, 1), minval=0.1, maxval=0.9)
  params = flow.init(KEY, x)
  z, _ = flow.inverse(params, x)
  a = cfg.logit_alpha
  p = a + (1 - 2 * a) * x
  np.testing.assert_allclose(z, jnp.log(p) - jnp.log1p(-p), atol=1e-5)


def test_linear_gaussian_flow_is_closed_form_gaussian():
  shape = (2, 2, 1)
  flow = mf.flows.linear_gaussian(mf.flows.LinearGaussianConfig(shape))
  rng = np.random.RandomState(0)
  l = np.tril(rng.randn(4, 4)) * 0.5 + np.eye(4)
  mu = rng.randn(*shape)
  params = mf.flows.linear_gaussian_params(mu, l)
  x = rng.randn(5, *shape)
  cov = l @ l.T
  diff = x.reshape(5, -1) - mu.reshape(1, -1)
  want = (-0.5 * np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
          - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1])
  np.testing.assert_allclose(flow.log_prob(params, x), want, rtol=1e-4)
  samples = flow.sample(params, KEY, 20000)
  np.testing.assert_allclose(np.cov(np.asarray(samples).reshape(20000, -1).T),
                             cov, atol=0.1)


def test_actnorm_data_dependent_init():
  x = 3.0 + 2.0 * jax.random.normal(KEY, (16, 4, 4, 3))
  y, _ = layers.ActNorm(layers.actnorm_init(x)).forward_and_log_det(x)
  np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.var(y, axis=(0, 1, 2)), 1.0, atol=1e-4)


def test_glow_actnorm_init_sees_flow_data():
  cfg = small_configs((8, 8, 3))["glow_affine"]
  flow = mf.flows.from_config(cfg)
  x = jax.random.uniform(KEY, (32, 8, 8, 3))
  params = flow.init(KEY, x)
  # First level, first step: actnorm applied after preprocessing + squeeze.
  h = layers.Squeeze().forward(x - 0.5)
  act = jax.tree_util.tree_map(lambda a: a[0], params[2]["actnorm"])
  y = layers.ActNorm(act).forward(h)
  np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.std(y, axis=(0, 1, 2)), 1.0, atol=1e-3)


class TestTransforms(chex.TestCase):
  """jit, vmap and grad on every public Flow function."""

  def setUp(self):
    super().setUp()
    cfg = small_configs((4, 4, 1))["realnvp"]
    self.flow, self.params, self.x = flow_and_params(cfg)

  @chex.variants(with_jit=True, without_jit=True)
  def test_log_prob_forward_inverse(self):
    f, p, x = self.flow, self.params, self.x
    lp = self.variant(f.log_prob)(p, x)
    chex.assert_shape(lp, (4,))
    z, ld = self.variant(f.inverse)(p, x)
    chex.assert_equal_shape([z, x])
    xr, ld2 = self.variant(f.forward)(p, z)
    chex.assert_trees_all_close(xr, x, atol=1e-4)
    chex.assert_shape(ld2, (4,))

  @chex.variants(with_jit=True, without_jit=True)
  def test_sample_and_bpd(self):
    f, p = self.flow, self.params
    xs = self.variant(f.sample, static_argnums=2)(p, KEY, 3)
    chex.assert_shape(xs, (3, 4, 4, 1))
    chex.assert_tree_all_finite(xs)
    xu = (self.x * 255).astype(jnp.uint8)
    bpd = self.variant(f.bits_per_dim)(p, xu, KEY)
    chex.assert_shape(bpd, (4,))
    assert np.all((bpd > 0) & (bpd < 20))

  def test_vmap_equals_batch(self):
    f, p, x = self.flow, self.params, self.x
    per = jax.jit(jax.vmap(lambda xi: f.log_prob(p, xi)))(x)
    np.testing.assert_allclose(per, f.log_prob(p, x), rtol=1e-5)
    unbatched = f.log_prob(p, x[0])
    chex.assert_shape(unbatched, ())

  def test_grad_is_finite(self):
    f, p, x = self.flow, self.params, self.x
    gp = jax.jit(jax.grad(lambda p: jnp.sum(f.log_prob(p, x))))(p)
    chex.assert_tree_all_finite(gp)
    gx = jax.jit(jax.grad(lambda x: jnp.sum(f.log_prob(p, x))))(x)
    chex.assert_shape(gx, x.shape)
    gz = jax.jit(jax.grad(lambda z: jnp.sum(f.forward(p, z)[1])))(
        jnp.zeros_like(x))
    chex.assert_tree_all_finite(gz)


def test_bits_per_dim_units():
  # A flow that is uniform on [0,1]^d would score exactly num_bits; check the
  # identity on 5-bit data counts 5 bits, not 8 (GlowIP's log(256) bug).
  cfg5 = small_configs((4, 4, 1))["glow_additive"]
  cfg5 = dataclasses.replace(cfg5, num_bits=5)
  flow = mf.flows.from_config(cfg5)
  x = jnp.zeros((2, 4, 4, 1), jnp.uint8)
  params = flow.init(KEY, jax.random.uniform(KEY, (4, 4, 4, 1)))
  d = 16
  xc = mf.flows.dequantize(x, 5)
  want = -flow.log_prob(params, xc) / (d * math.log(2)) + 5
  np.testing.assert_allclose(flow.bits_per_dim(params, x), want, rtol=1e-6)


@pytest.mark.parametrize("make,kwargs,match", [
    (mf.flows.RealNVPConfig, dict(image_shape=(28, 28)), "image_shape"),
    (mf.flows.RealNVPConfig, dict(image_shape=(30, 30, 1), num_scales=3),
     "multiples of 4"),
    (mf.flows.GlowConfig, dict(image_shape=(28, 28, 1), num_levels=3),
     "multiples of 8"),
    (mf.flows.GlowConfig, dict(coupling="spline"), "coupling"),
    (mf.flows.RealNVPConfig, dict(num_bits=9), "num_bits"),
])
def test_bad_configs_fail_at_construction(make, kwargs, match):
  with pytest.raises(ValueError, match=match):
    make(**kwargs)


def test_wrong_shapes_and_names_are_named():
  flow = mf.flows.from_config(small_configs((4, 4, 1))["realnvp"])
  with pytest.raises(ValueError, match=r"x_batch.*\(8, 8, 1\).*4, 4, 1"):
    flow.init(KEY, jnp.zeros((2, 8, 8, 1)))
  with pytest.raises(ValueError, match="unknown|expected one of"):
    mf.flows.preset("realnvp_imagenet")


def test_bfloat16_compute_is_close_to_float32_and_returns_float32():
  cfg = small_configs((8, 8, 1))["realnvp"]
  flow, params, x = flow_and_params(cfg)
  bf = mf.flows.with_compute_dtype(flow, jnp.bfloat16)

  @jax.jit
  def both(params, x):
    z, ld = flow.inverse(params, x)
    zb, ldb = bf.inverse(params, x)
    xb, _ = bf.forward(params, z)
    g = jax.grad(lambda v: jnp.sum(bf.forward(params, v)[0]))(z)
    gf = jax.grad(lambda v: jnp.sum(flow.forward(params, v)[0]))(z)
    return z, ld, zb, ldb, xb, g, gf, bf.log_prob(params, x)

  z, ld, zb, ldb, xb, g, gf, lpb = both(params, x)
  for a in (zb, ldb, xb, g, lpb):
    assert a.dtype == jnp.float32
  # bfloat16 keeps 8 significant bits: relative error ~ 2^-8 per op.
  assert float(jnp.max(jnp.abs(zb - z))) <= 0.05 * float(jnp.max(jnp.abs(z)))
  assert float(jnp.max(jnp.abs(xb - x))) <= 0.02
  np.testing.assert_allclose(ldb, ld,
                             atol=0.02 * float(jnp.max(jnp.abs(ld))) + 0.5)
  np.testing.assert_allclose(g, gf, atol=0.05 * float(jnp.max(jnp.abs(gf))))
  np.testing.assert_allclose(lpb, mf.flows.standard_normal_log_prob(zb) + ldb,
                             rtol=1e-5, atol=1e-4)
  with pytest.raises(ValueError, match="dtype"):
    mf.flows.with_compute_dtype(flow, jnp.int32)


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("name", ["realnvp", "glow_affine"])
def test_bfloat16_layers_stay_bfloat16(name, scan):
  """No float32 constant (a mask, a permutation, a log) promotes the layers
  back to float32: given bfloat16 params and input, every layer computes in
  bfloat16, scanned stacks included (their carry must keep its dtype)."""
  cfg = dataclasses.replace(small_configs((8, 8, 1))[name], scan_layers=scan)
  flow, params, x = flow_and_params(cfg)
  half = jax.tree_util.tree_map(
      lambda a: a.astype(jnp.bfloat16)
      if jnp.issubdtype(a.dtype, jnp.floating) else a, params)
  z, ld = jax.jit(flow.inverse)(half, x.astype(jnp.bfloat16))
  x_back, ld_back = jax.jit(flow.forward)(half, z)
  assert {a.dtype for a in (z, ld, x_back, ld_back)} == {jnp.dtype("bfloat16")}


@pytest.mark.parametrize("scan", [False, True])
def test_params_of_another_depth_are_refused_not_cut(scan):
  """A stack given more steps' params than it has would, unrolled, use the
  first n and drop the rest silently: it is an error instead."""
  def cfg(final):
    return mf.flows.RealNVPConfig(
        image_shape=(8, 8, 1), num_scales=2, num_blocks=1, hidden_channels=4,
        couplings_per_scale=1, final_couplings=final, scan_layers=scan)
  x = jnp.full((2, 8, 8, 1), 0.5)
  deeper = mf.flows.from_config(cfg(2)).init(KEY, x)
  with pytest.raises(ValueError, match=r"params: got a stack of \[2\] steps, "
                     r"expected 1"):
    mf.flows.from_config(cfg(1)).log_prob(deeper, x)


@pytest.mark.parametrize("scan", [False, True])
def test_params_of_another_width_are_refused_not_broadcast(scan):
  """Conditioner params are fetched without flax's traced shape check
  (``nets.checked_param``); a leaf of the wrong shape is still an error
  naming the param, never a broadcast."""
  def cfg(width):
    return mf.flows.RealNVPConfig(
        image_shape=(8, 8, 1), num_scales=2, num_blocks=1,
        hidden_channels=width, couplings_per_scale=1, final_couplings=1,
        scan_layers=scan)
  x = jnp.full((2, 8, 8, 1), 0.5)
  wider = mf.flows.from_config(cfg(6)).init(KEY, x)
  with pytest.raises(ValueError, match=r"param 'direction' has shape "
                     r"\(3, 3, \d+, 6\), expected \(3, 3, \d+, 4\)"):
    mf.flows.from_config(cfg(4)).log_prob(wider, x)
  # A bias of one entry would broadcast over the features: refused too.
  flow = mf.flows.from_config(cfg(4))
  params = flow.init(KEY, x)
  path, leaf = next((p, l) for p, l in
                    jax.tree_util.tree_leaves_with_path(params)
                    if "ZeroConv" in jax.tree_util.keystr(p)
                    and jax.tree_util.keystr(p).endswith("['bias']"))
  bad = jax.tree_util.tree_map_with_path(
      lambda p, l: l[..., :1] if p == path else l, params)
  with pytest.raises(ValueError, match=r"param 'bias' has shape"):
    flow.log_prob(bad, x)


def test_zero_conv_is_flax_conv_bit_for_bit():
  """``ZeroConv`` keeps ``flax.linen.Conv``'s params (names, shapes, zero
  init) and, once trained, computes exactly what it computed."""
  import flax.linen as nn
  x = jax.random.normal(KEY, (2, 6, 6, 3))
  params = nets.ZeroConv(5).init(KEY, x)["params"]
  ref = nn.Conv(5, (3, 3), padding="SAME").init(KEY, x)["params"]
  chex.assert_trees_all_equal_shapes(params["Conv_0"], ref)
  assert all(float(jnp.abs(a).max()) == 0.0
             for a in jax.tree_util.tree_leaves(params))
  trained = perturb(params, jax.random.PRNGKey(1), scale=1.0)
  ours = nets.ZeroConv(5).apply({"params": trained}, x)
  theirs = nn.Conv(5, (3, 3), padding="SAME").apply(
      {"params": trained["Conv_0"]}, x)
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
  # Leading batch axes, as flax.linen.Conv takes them.
  x5 = jnp.stack([x, -x])
  np.testing.assert_array_equal(
      np.asarray(nets.ZeroConv(5).apply({"params": trained}, x5)),
      np.asarray(nn.Conv(5, (3, 3), padding="SAME").apply(
          {"params": trained["Conv_0"]}, x5)))
