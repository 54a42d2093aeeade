"""Bad input, as a new user gives it: every reproducer of issue #20 as a
test, operator adjointness, and a property-based fuzz of the solvers.

The fuzz (``test_solvers_fuzzed``) draws whole calls of ``recover``,
``recover_asim`` and ``sweep``: shapes, scales, weights, steps, restarts,
starts, NaN and inf in y or in a start, and operators, noises and params
that do not fit the prior.  Every case must end in a named error (the
argument, what was received, what was expected) or in a finite result of
the right shape; a result that is not finite must have been reported (a
``StalledWarning``).  ``MAPFLOW_FUZZ_EXAMPLES`` sets the number of cases
(default 25, the CI profile); ``MAPFLOW_FUZZ_REPORT=FILE`` writes the
outcome counts as JSON.
"""

import json
import os
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mapflow as mf
from mapflow import data, io
from mapflow.solve.engine import StalledWarning

SHAPE = (8, 8, 1)
CFG = mf.flows.RealNVPConfig(image_shape=SHAPE, num_scales=2, num_blocks=1,
                             hidden_channels=4, couplings_per_scale=1,
                             final_couplings=1)
PRIOR = mf.flows.from_config(CFG)
PARAMS = PRIOR.init(jax.random.PRNGKey(0), jnp.full((2,) + SHAPE, 0.5))
KEY = jax.random.PRNGKey(1)
ADAM = optax.adam(1e-2)


def _recover(y, **kw):
  base = dict(prior=PRIOR, params=PARAMS, operator=mf.operators.identity(),
              noise=mf.noise.gaussian(0.1), steps=2, optimizer=ADAM)
  return mf.recover(y, **{**base, **kw})


# ---------------------------------------------------------------------------
# The reproducers.

def test_an_overflowing_gradient_is_skipped_and_reported():
  """σ = 1e-8 against y = 1e6: the gradient's square overflows Adam's
  second moment.  Such steps are skipped, counted and warned about, not
  left to stall silently with ``skipped`` at 0."""
  y = jnp.full((2,) + SHAPE, 1e6)
  with pytest.warns(StalledWarning, match="2 of 2 problems skipped every"):
    res = _recover(y, noise=mf.noise.gaussian(1e-8, SHAPE), steps=5)
  np.testing.assert_array_equal(res.skipped, [5, 5])
  # A reasonable σ moves z.
  res = _recover(y * 1e-6, noise=mf.noise.gaussian(1e-2, SHAPE), steps=5)
  assert float(jnp.abs(res.z).max()) > 0
  assert np.all(np.asarray(res.skipped) == 0)


def test_a_non_finite_start_is_refused():
  y = jnp.zeros((2,) + SHAPE)
  with pytest.raises(ValueError, match=r"init: got 128 non-finite entries"):
    _recover(y, config=mf.SolverConfig(
        init=jnp.full((2,) + SHAPE, jnp.nan)))


def test_a_corrupt_or_edited_checkpoint_is_refused(tmp_path):
  path = mf.checkpoint.save(tmp_path / "c", PARAMS, CFG)
  # One flipped byte in an array file.
  chunks = [f for f in (path / "arrays").rglob("*") if f.is_file()
            and f.parent.name == "d" and f.parent.parent.name == "arrays"]
  assert chunks
  raw = bytearray(chunks[0].read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  chunks[0].write_bytes(bytes(raw))
  with pytest.raises(mf.checkpoint.CheckpointError, match=str(path)):
    mf.checkpoint.load(path)
  # A config.json edited after the save (another image shape).
  path = mf.checkpoint.save(tmp_path / "d", PARAMS, CFG)
  cfg = json.loads((path / "config.json").read_text())
  cfg["fields"]["image_shape"] = [16, 16, 1]
  (path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(mf.checkpoint.CheckpointError, match="changed since"):
    mf.checkpoint.load(path)
  # An unknown field is named, with the file.
  with pytest.raises(mf.checkpoint.CheckpointError,
                     match="unknown RealNVPConfig fields \\['colour'\\]"):
    mf.checkpoint.config_from_json(
        {"type": "RealNVPConfig", "fields": {**cfg["fields"],
                                             "colour": 1}})


def test_shipped_models_carry_checksums():
  for name in mf.pretrained.available():
    meta = json.loads((mf.pretrained.path(name) / "meta.json").read_text())
    assert "config_sha256" in meta, name
    assert all("sha256" in leaf for leaf in meta["leaves"]), name
    assert meta["files"], name  # each array file's digest, checked on load


@pytest.mark.parametrize("what,match", [
    ("mask", r"operator: a mask of shape \(8, 8, 3\), applied to images of "
             r"shape \(8, 8, 1\)"),
    ("matrix", r"operator: a Gaussian matrix for signals of dimension 784"),
    ("empty_params", r"params: got a pytree of 0 leaves"),
    ("other_params", r"params: got a pytree of \d+ leaves that does not "
                     "match"),
])
def test_shapes_that_do_not_fit_the_prior_are_named(what, match):
  y = jnp.zeros((2,) + SHAPE)
  kw = {}
  if what == "mask":
    op = mf.operators.mask(KEY, (8, 8, 3))
    kw = dict(operator=op, noise=mf.noise.gaussian(0.1))
    y = jnp.zeros((2, 8, 8, 3))
  elif what == "matrix":
    kw = dict(operator=mf.operators.gaussian(KEY, 10, (28, 28, 1)))
    y = jnp.zeros((2, 10))
  elif what == "empty_params":
    kw = dict(params={})
  else:
    other = mf.flows.from_config(mf.flows.RealNVPConfig(
        image_shape=SHAPE, num_scales=1, num_blocks=1, hidden_channels=4,
        final_couplings=2))
    kw = dict(params=other.init(KEY, jnp.full((1,) + SHAPE, 0.5)))
  with pytest.raises(ValueError, match=match):
    _recover(y, **kw)


def test_bad_values_are_named(tmp_path):
  op = mf.operators.gaussian(KEY, 12, SHAPE)
  y = jnp.zeros((2, 12))
  cases = [
      (lambda: mf.operators.with_active(op, -3),
       r"active: got -3, expected 0 <= active <= m = 12"),
      (lambda: mf.sweep(y, prior=PRIOR, params=PARAMS, operator=op,
                        noise=mf.noise.gaussian(0.1), betas=[1.0],
                        ms=[10.7], steps=1),
       r"ms: got \[10.7\], expected integers"),
      (lambda: mf.operators.gaussian(KEY, 12, 0), r"d: got 0"),
      (lambda: mf.operators.one_bit(mf.operators.one_bit(op)),
       r"op: got a one_bit operator"),
      (lambda: _recover(jnp.zeros((2,) + SHAPE), beta="0.1"),
       r"beta: got '0.1', expected finite numbers"),
      (lambda: mf.sweep(jnp.zeros((2,) + SHAPE), prior=PRIOR, params=PARAMS,
                        operator=mf.operators.identity(),
                        noise=mf.noise.gaussian(0.1), betas=[1.0], steps=1,
                        config=mf.SolverConfig(restarts=0, max_batch=4)),
       r"restarts: got 0, expected an int >= 1"),
      # A flow's (z, log_det) passed where one array belongs.
      (lambda: _recover(PRIOR.inverse(PARAMS, jnp.full((2,) + SHAPE, 0.5))),
       r"y: got a tuple of 2 items of shapes \[\(2, 8, 8, 1\), \(2,\)\], "
       "expected one array"),
      (lambda: _recover(jnp.zeros((2,) + SHAPE), config=mf.SolverConfig(
          init=PRIOR.inverse(PARAMS, jnp.full((2,) + SHAPE, 0.5)))),
       r"init: got a tuple of 2 items"),
      (lambda: mf.sweep(jnp.zeros((2,) + SHAPE), prior=PRIOR, params=PARAMS,
                        operator=mf.operators.identity(),
                        noise=mf.noise.gaussian(0.1), betas=[1.0], steps=1,
                        config=mf.SolverConfig(init=PRIOR.inverse(
                            PARAMS, jnp.full((2,) + SHAPE, 0.5)))),
       r"init: got a tuple of 2 items"),
      (lambda: mf.sample_posterior(
          jnp.zeros((2,) + SHAPE), prior=PRIOR, params=PARAMS,
          operator=mf.operators.identity(), noise=mf.noise.gaussian(0.1),
          num_samples=2, key=KEY, config=mf.SamplerConfig(
              init=PRIOR.inverse(PARAMS, jnp.full((2,) + SHAPE, 0.5)))),
       r"init: got a tuple of 2 items"),
      (lambda: mf.laplace_approximation(
          PRIOR.inverse(PARAMS, jnp.full((2,) + SHAPE, 0.5)),
          jnp.zeros((2,) + SHAPE), prior=PRIOR, params=PARAMS,
          operator=mf.operators.identity(), noise=mf.noise.gaussian(0.1)),
       r"z0: got a tuple of 2 items"),
      (lambda: _recover("y.npy"), r"y: got a str, expected an array"),
      (lambda: _recover(jnp.zeros((0,) + SHAPE)), r"y: got an empty batch"),
      (lambda: _recover(jnp.zeros((2,) + SHAPE), key=0),
       r"key: got 0, expected a JAX PRNG key"),
      (lambda: _recover(jnp.zeros((2,) + SHAPE), config=mf.SolverConfig(
          init="random", key=5)), r"config.key: got 5, expected a JAX PRNG"),
      (lambda: mf.pretrained.load("../models/fashion_mnist_realnvp"),
       r"name: got '../models/fashion_mnist_realnvp', expected one of"),
      (lambda: data.load("fashion_mnist", "test",
                         data_dir=str(tmp_path / "nowhere")),
       r"data_dir: got .*nowhere'?, which is not a directory"),
  ]
  for call, match in cases:
    with pytest.raises((ValueError, data.DatasetNotFoundError), match=match):
      call()


def test_a_second_trainer_on_a_workdir_is_refused(tmp_path):
  from mapflow import training
  tc = training.TrainConfig(batch_size=2)
  x = np.zeros((4,) + SHAPE, np.uint8)
  with io.FolderLock(tmp_path):  # another writer holds the workdir
    with pytest.raises(io.LockedError, match="workdir: .* in use by "
                       f"process {os.getpid()}"):
      training.train(CFG, tc, x, x, tmp_path, steps=1, progress=False)


def test_training_logs_survive_torn_lines_and_reruns(tmp_path):
  """A torn last line (a kill mid-write) does not break the resume; a
  rerun of a finished run adds no duplicate evaluation; temporaries a
  killed save left are swept."""
  from mapflow import training
  tc = training.TrainConfig(
      batch_size=4, learning_rate=1e-3, halve_every=100,
      log=training.LogSchedule(eval_every=0, sample_every=0,
                               checkpoint_every=2, log_every=1,
                               eval_batch=8, eval_limit=8))
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (16,) + SHAPE).astype(np.uint8)
  training.train(CFG, tc, x, x, tmp_path, steps=2, progress=False)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 3, "bpd": 1.')  # torn
  (tmp_path / ".state.tmp-orphan").mkdir()
  training.train(CFG, tc, x, x, tmp_path, steps=4, progress=False)
  steps = [r["step"] for r in training.read_jsonl(tmp_path / "metrics.jsonl")]
  assert steps == [1, 2, 3, 4]
  training.train(CFG, tc, x, x, tmp_path, steps=4, progress=False)
  evals = [r["step"] for r in training.read_jsonl(tmp_path / "evals.jsonl")]
  assert evals == [2, 4]
  assert not list(tmp_path.glob(".state.*"))


# ---------------------------------------------------------------------------
# Linear operators and the straight-through sign.

def _linear_operators():
  g = mf.operators.gaussian(KEY, 10, SHAPE)
  return {"identity": mf.operators.identity(),
          "scale": mf.operators.scale(0.5),
          "gaussian": g,
          "gaussian_active": mf.operators.with_active(g, 6),
          "mask": mf.operators.mask(KEY, SHAPE, 0.6),
          "compose": mf.operators.compose(mf.operators.scale(2.0),
                                          mf.operators.mask(KEY, SHAPE))}


@pytest.mark.parametrize("name", sorted(_linear_operators()))
def test_linear_operators_are_linear_with_their_adjoint(name):
  """⟨Ax, y⟩ = ⟨x, Aᵀy⟩ with Aᵀ from ``jax.linear_transpose``, and A is
  linear; a Gaussian matrix's back-projection is its adjoint."""
  op = _linear_operators()[name]
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
  x = jax.random.normal(k1, (3,) + SHAPE)
  x2 = jax.random.normal(k2, (3,) + SHAPE)
  ax = op(x)
  y = jax.random.normal(k3, ax.shape)
  (aty,) = jax.linear_transpose(op, x)(y)
  np.testing.assert_allclose(jnp.vdot(ax, y), jnp.vdot(x, aty), rtol=1e-4)
  np.testing.assert_allclose(op(2.0 * x - 3.0 * x2),
                             2.0 * op(x) - 3.0 * op(x2), rtol=1e-4,
                             atol=1e-4)
  if name.startswith("gaussian"):
    masked = y if op.active is None else y * op.row_mask()
    np.testing.assert_allclose(op.back_project(masked), aty.reshape(3, -1),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ste", ["identity", "clipped"])
def test_straight_through_sign_gradient_matches_its_definition(ste):
  """Forward: sign(A(x - c)).  Backward: the cotangent w goes through the
  sign as w (identity) or w * 1{|u| <= 1} (clipped), then through A."""
  a = mf.operators.gaussian(KEY, 20, SHAPE)
  op = mf.operators.one_bit(a, 0.5, ste)
  x = jax.random.uniform(jax.random.PRNGKey(2), (2,) + SHAPE)
  w = jax.random.normal(jax.random.PRNGKey(3), (2, 20))
  out, vjp = jax.vjp(op, x)
  u = a(x - 0.5)
  np.testing.assert_array_equal(out, jnp.sign(u))
  (g,) = vjp(w)
  gate = 1.0 if ste == "identity" else (jnp.abs(u) <= 1.0)
  want = (w * gate) @ a.matrix
  np.testing.assert_allclose(g.reshape(2, -1), want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# The fuzz.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ARGUMENTS = {"y", "prior", "params", "operator", "noise", "beta", "gamma",
             "betas", "ms", "steps", "optimizer", "config", "init",
             "restarts", "init_std", "init_range", "parametrization",
             "chunk", "devices", "max_batch", "key", "active", "hyper"}
OUTCOMES = {"named error": 0, "finite result": 0, "reported stall": 0,
            "unhelpful error": 0, "silent non-finite result": 0,
            "wrong shape": 0}
FAILURES = []
EXAMPLES = int(os.environ.get("MAPFLOW_FUZZ_EXAMPLES", "16"))
OTHER = mf.flows.from_config(mf.flows.RealNVPConfig(
    image_shape=SHAPE, num_scales=1, num_blocks=1, hidden_channels=4,
    final_couplings=2))
OTHER_PARAMS = OTHER.init(KEY, jnp.full((1,) + SHAPE, 0.5))


@st.composite
def solver_calls(draw):
  """One call of a solver, as drawn; returns (solver, y, kwargs, shape of
  x the call should give)."""
  solver = draw(st.sampled_from(["recover", "recover_asim", "sweep"]))
  b = draw(st.sampled_from([1, 2]))
  # Half the calls are well formed (scales and values still extreme), the
  # others may get any bad value for any argument.
  ok = draw(st.booleans())

  def pick(good, bad=()):
    return draw(st.sampled_from(list(good) + ([] if ok else list(bad))))
  g = mf.operators.gaussian(KEY, 12, SHAPE)
  op_kind = pick(["identity", "scale", "gaussian", "one_bit", "mask"],
                 ["mask_other_shape", "gaussian_other_shape"])
  op, event = {
      "identity": (mf.operators.identity(), SHAPE),
      "scale": (mf.operators.scale(draw(st.sampled_from([0.5, -2.0, 1e-6]))),
                SHAPE),
      "gaussian": (g, (12,)),
      "one_bit": (mf.operators.one_bit(g, 0.5), (12,)),
      "mask": (mf.operators.mask(KEY, SHAPE), SHAPE),
      "mask_other_shape": (mf.operators.mask(KEY, (8, 8, 3)), (8, 8, 3)),
      "gaussian_other_shape": (mf.operators.gaussian(KEY, 12, (4, 4, 1)),
                               (12,)),
  }[op_kind]
  y_shape = pick([(b,) + event], [event, (b, 5)])
  scale = 10.0 ** draw(st.integers(-8, 8))
  seed = draw(st.integers(0, 2 ** 16))
  y = scale * np.random.default_rng(seed).normal(size=y_shape)
  bad = pick([None], [np.nan, np.inf])
  if bad is not None:
    y.flat[0] = bad
  sigma = 10.0 ** draw(st.integers(-9, 3))
  noise = pick(["gaussian", "gaussian_event"] + (
      ["sinusoidal"] if event == SHAPE else []), ["sinusoidal",
                                                  "sinusoidal_other_shape"])
  noise = {"gaussian": mf.noise.gaussian(sigma),
           "gaussian_event": mf.noise.gaussian(sigma, event),
           "sinusoidal": mf.noise.sinusoidal(SHAPE, sigma),
           "sinusoidal_other_shape": mf.noise.sinusoidal((6, 6, 1), sigma),
           }[noise]
  weight = draw(st.floats(0.0, 1e4)) if ok else draw(st.one_of(
      st.floats(-1.0, 1e4, allow_nan=False), st.just(float("nan")),
      st.just(float("inf")), st.just("0.1"), st.just([0.1, 1.0]),
      st.just(0.0)))
  steps = pick([1, 2, 3], [0, -1, 1.5, True])
  restarts = pick([1, 2], [0, 1.5])
  init_kind = pick(["zeros", "random", "measurements", "array"],
                   ["bogus", "nan_array", "array_other_shape"])
  init = {"nan_array": np.full((b,) + SHAPE, np.nan),
          "array": np.zeros((b,) + SHAPE),
          "array_other_shape": np.zeros((b, 3, 3, 1))}.get(init_kind,
                                                           init_kind)
  config = mf.SolverConfig(
      init=init, restarts=restarts,
      init_std=pick([0.1, 1.0, 0.0], [-1.0, float("nan")]),
      init_range=pick([(0.02, 0.98), (0.0, 1.0)], [(1.0, 0.0)]),
      parametrization=pick(["z", "x"], ["noise", "w"]),
      key=KEY)
  params = pick(["ok"], ["empty", "other"])
  params = {"ok": PARAMS, "empty": {}, "other": OTHER_PARAMS}[params]
  kw = dict(prior=PRIOR, params=params, operator=op, steps=steps,
            optimizer=ADAM, config=config)
  want = (b,) + SHAPE
  if solver == "recover_asim":
    kw["gamma"] = weight
  else:
    kw["noise"] = noise
  if solver == "recover":
    kw["beta"] = weight
  if solver == "sweep":
    kw["betas"] = weight
    kw["ms"] = pick([None] + ([[2, 12]] if event == (12,) else []),
                    [[2, 12], [0], [10.7], [100]])
    n_b = len(np.atleast_1d(np.asarray(weight, dtype=object)))
    n_m = 1 if kw["ms"] is None else len(kw["ms"])
    want = (n_b, n_m) + want
  return solver, y, kw, want


def _named(e: Exception) -> bool:
  msg = str(e)
  m = re.match(r"^-*([\w]+): ", msg)
  return bool(m and m.group(1) in ARGUMENTS)


LOG = os.environ.get("MAPFLOW_FUZZ_LOG")


def _log(solver, y, kw):
  """One line per case, flushed before it runs (so a crash names it)."""
  if LOG:
    cfg = kw["config"]
    with open(LOG, "a") as f:
      f.write(repr((solver, np.shape(y), type(kw["operator"]).__name__,
                    type(kw.get("noise")).__name__,
                    kw.get("beta", kw.get("gamma", kw.get("betas"))),
                    kw.get("ms"), kw["steps"], cfg.restarts,
                    cfg.init if isinstance(cfg.init, str) else
                    np.shape(cfg.init), cfg.parametrization,
                    cfg.init_std, cfg.init_range)) + "\n")


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck),
          derandomize=bool(os.environ.get("MAPFLOW_FUZZ_DERANDOMIZE")))
@given(solver_calls())
def test_solvers_fuzzed(call):
  solver, y, kw, want = call
  _log(solver, y, kw)
  if sum(OUTCOMES.values()) % 250 == 249:
    # Thousands of distinct compiled programs in one process crash
    # XLA:CPU's compiler (seen at ~2,400 cases); see clear_caches.
    mf.solve.clear_caches()
  fn = {"recover": mf.recover, "recover_asim": mf.recover_asim,
        "sweep": mf.sweep}[solver]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
      res = fn(y, **kw)
    except (ValueError, TypeError, mf.checkpoint.CheckpointError) as e:
      outcome = "named error" if _named(e) else "unhelpful error"
      OUTCOMES[outcome] += 1
      if outcome != "named error":
        FAILURES.append((solver, f"{type(e).__name__}: {e}"[:300]))
      assert outcome == "named error", (solver, e)
      return
  x = np.asarray(res.x)
  if x.shape != want:
    OUTCOMES["wrong shape"] += 1
    FAILURES.append((solver, f"x {x.shape}, expected {want}"))
    raise AssertionError((solver, x.shape, want))
  stalled = any(issubclass(w.category, StalledWarning) for w in caught)
  if np.all(np.isfinite(x)) and np.all(np.isfinite(np.asarray(res.loss))):
    OUTCOMES["reported stall" if stalled else "finite result"] += 1
    return
  if stalled and np.all(np.isfinite(x)):
    OUTCOMES["reported stall"] += 1
    return
  OUTCOMES["silent non-finite result"] += 1
  FAILURES.append((solver, "non-finite x or loss without a warning"))
  raise AssertionError((solver, "non-finite result, not reported"))


def teardown_module(module):
  path = os.environ.get("MAPFLOW_FUZZ_REPORT")
  if path:
    io.write_json_atomic(path, {"cases": sum(OUTCOMES.values()),
                                "outcomes": OUTCOMES,
                                "failures": FAILURES[:50]})


def test_shapes_and_dtypes_that_broadcast_into_a_wrong_answer_are_refused(
    tmp_path):
  """A second audit (2026-12-08): each of these had returned a number
  (or a picture, or an emptied folder) instead of an error."""
  g = mf.operators.gaussian(KEY, 3, (2, 2, 1))
  x = jnp.ones((2, 2, 2, 1))
  u8 = np.full((2, 4, 4, 1), 200, np.uint8)
  cases = [
      (lambda: mf.metrics.psnr(jnp.ones((2, 4, 4, 1)), jnp.ones((4, 4, 1))),
       r"x_hat: got shape \(4, 4, 1\), expected x's shape"),
      (lambda: mf.metrics.psnr(u8, u8 - 10), r"data_range: got None with "
       "integer images"),
      (lambda: mf.metrics.psnr(x, x, data_range=0.0), "data_range: got 0.0"),
      (lambda: mf.viz.image_grid(u8), "images: got uint8 values"),
      (lambda: mf.flows.quantize(jnp.zeros((2, 2, 2, 1)), 8),
       "x_uint8: got float32 values"),
      (lambda: mf.training.evaluate_bpd(
          PRIOR, PARAMS, np.zeros(SHAPE, np.uint8), 4),
       r"x_uint8: got shape \(8, 8, 1\)"),
      (lambda: mf.operators.masked(mf.operators.identity(), jnp.ones(
          (2, 1))).check_input((2, 2, 1)), r"keep: got shape \(2, 1\)"),
      (lambda: mf.operators.masked(g, jnp.array([1.0, 0.5, 0.0])),
       "keep: got values other than 0 and 1"),
      (lambda: mf.operators.mask(KEY, (2, 2))(x), r"x: got shape"),
      (lambda: mf.operators.with_active(mf.operators.batched([g, g]), 1),
       r"op: got per-example operators"),
      (lambda: mf.operators.gaussian(KEY, 3, 4, active=1.5),
       "active: got 1.5"),
      (lambda: mf.operators.scale(0.0), "c: got 0.0"),
      (lambda: mf.noise.diagonal(jnp.ones(3)).log_prob(jnp.zeros((2, 1))),
       r"value: got shape \(2, 1\)"),
      (lambda: mf.noise.gaussian(float("inf")), "sigma: got inf"),
      (lambda: mf.operators.one_bit(g, center=float("nan")),
       "center: got nan"),
      (lambda: mf.operators.one_bit(None), "op: got NoneType"),
      (lambda: mf.operators.compose(None, g), "outer: got NoneType"),
      (lambda: mf.operators.batched([mf.operators.identity()] * 2),
       "hold no arrays to differ per example"),
      (lambda: data.quantize_bits(np.array([300]), 5), r"x_uint8: got int64 "
       r"values in \[300, 300\]"),
      (lambda: mf.flows.RealNVPConfig(image_shape=(8, 8, 1),
                                      scan_layers="no"),
       "scan_layers: got 'no'"),
      (lambda: mf.flows.RealNVPConfig(image_shape=None), "image_shape: got "
       "None"),
      (lambda: mf.training.batch_indices(0, 10, 0, 0), "batch_size: got 0"),
      (lambda: mf.flows.linear_gaussian_params(np.zeros(4), np.zeros((4, 4))),
       "scale_tril: got a diagonal with zero"),
      (lambda: mf.flows.linear_gaussian_params(np.zeros(4), np.eye(3)),
       r"scale_tril: got shape \(3, 3\), expected \(4, 4\)"),
      (lambda: data.load_digits("test", 0), "size: got 0"),
      (lambda: mf.flows.GlowConfig(image_shape=(8, 8, 1), seed=-1),
       "GlowConfig.seed: got -1"),
      (lambda: mf.pretrained.load(["x"]), r"name: got \['x'\]"),
      (lambda: mf.checkpoint.save(tmp_path / "a_file", PARAMS),
       "which is a file"),
      (lambda: mf.checkpoint.save(tmp_path / "notes", PARAMS),
       "holds other things than a mapflow checkpoint"),
  ]
  (tmp_path / "a_file").write_text("keep me")
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "todo.txt").write_text("keep me too")
  for call, match in cases:
    with pytest.raises(ValueError, match=match):
      call()
  assert (tmp_path / "a_file").read_text() == "keep me"
  assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me too"
  # What is right still works: 8-bit images with their range (or one per
  # example), lists, bfloat16 pictures, a std map shared by channels,
  # integer arrays as counts, a mask vmapped over images, NumPy config
  # values, a checkpoint replaced by another.
  assert np.isfinite(mf.metrics.psnr(u8, u8 - 10, 255.0)).all()
  assert mf.metrics.psnr(u8, u8 - 10, np.array([255.0, 200.0])).shape == (2,)
  assert mf.metrics.psnr([[0.0, 1.0]], [[0.0, 0.5]]).shape == (1,)
  assert mf.viz.image_grid(jnp.ones((2, 4, 4, 1), jnp.bfloat16)).max() == 255
  np.testing.assert_allclose(
      mf.noise.diagonal(jnp.ones((4, 4, 1))).log_prob(jnp.zeros((2, 4, 4, 3))),
      mf.noise.diagonal(jnp.ones((4, 4, 3))).log_prob(jnp.zeros((2, 4, 4, 3))))
  assert mf.operators.gaussian(KEY, 5, 4, active=np.array(3)).active == 3
  assert len(mf.training.batch_indices(jnp.int32(3), 10, 2, 0)) == 2
  m = mf.operators.mask(KEY, (4, 4, 1))
  np.testing.assert_array_equal(jax.vmap(m)(jnp.ones((3, 4, 4, 1))),
                                m(jnp.ones((3, 4, 4, 1))))
  mf.flows.RealNVPConfig(image_shape=(8, 8, 1), scan_layers=np.bool_(True),
                         logit_alpha=np.float32(0.05))
  mf.checkpoint.save(tmp_path / "ckpt", PARAMS)
  mf.checkpoint.save(tmp_path / "ckpt", PARAMS)
