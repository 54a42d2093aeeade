"""The XLA options mapflow compiles its repeated programs with: on CPU,
convolutions run on XLA's own multi-threaded kernels, not as YNNPACK
fusions (``mapflow.xla.step_options``); a user's ``XLA_FLAGS`` wins."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mapflow as mf

FLAG = "xla_cpu_experimental_ynn_fusion_type"


def _conv_tanh_sum(x, k):
  y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.tanh(y).sum()


def _compiled_text(options):
  x = jnp.ones((8, 14, 14, 32))
  k = jnp.ones((3, 3, 32, 32))
  return jax.jit(_conv_tanh_sum, compiler_options=options).lower(
      x, k).compile().as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU options")
def test_step_options_keep_convolutions_out_of_ynnpack(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  options = mf.xla.step_options()
  if options is None:
    pytest.skip("this jaxlib has no YNNPACK fusion option")
  text = _compiled_text(options)
  conv = [l for l in text.splitlines() if " convolution(" in l]
  assert conv, "the convolution should stay an XLA convolution"
  assert "__ynn_fusion" not in text
  # The run-once programs take the same convolutions, at -O0.
  once = mf.xla.run_once_options()
  assert once[FLAG] == options[FLAG]
  assert once["xla_backend_optimization_level"] == 0


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU options")
def test_a_users_xla_flags_decide_the_convolutions(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", f"--{FLAG}=+individual_dot")
  assert mf.xla.step_options() is None
  assert mf.xla.run_once_options() == {"xla_backend_optimization_level": 0}
  monkeypatch.setenv("XLA_FLAGS", f"--{FLAG}=+individual_dot "
                     "--xla_backend_optimization_level=2")
  assert mf.xla.run_once_options() is None


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU options")
def test_quick_compile_flags_are_known_to_this_jaxlib_and_leave_a_users(
    monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  flags = mf.xla.quick_compile_flags()
  assert "--xla_backend_optimization_level=0" in flags
  # An XLA_FLAGS entry this XLA does not know aborts the process; as a
  # compiler option it raises instead, so check each one that way.
  options = {}
  for f in flags:
    name, value = f[2:].split("=")
    options[name] = {"false": False, "true": True}.get(value, value)
    if value.isdigit():
      options[name] = int(value)
  x, k = jnp.ones((2, 6, 6, 3)), jnp.full((3, 3, 3, 4), 0.1)
  quick = jax.jit(_conv_tanh_sum, compiler_options=options)(x, k)
  np.testing.assert_allclose(quick, _conv_tanh_sum(x, k), rtol=1e-6)
  # The user's own settings stay theirs.
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=2 "
                     "--xla_cpu_use_fusion_emitters=true")
  assert mf.xla.quick_compile_flags() == []
  assert mf.xla.quick_compile_flags(xla_flags="") == flags


def test_the_solver_step_and_training_step_compile_with_the_options(
    monkeypatch):
  """Each repeated program asks ``step_options`` when it is built: a spy
  counts the asks, and an option the compiler refuses shows it is used."""
  calls = []
  real = mf.xla.step_options

  def spy():
    calls.append(1)
    return real()

  monkeypatch.setattr(mf.xla, "step_options", spy)
  # Only the repeated programs ask (the run-once ones would ask through
  # run_once_options otherwise).
  monkeypatch.setattr(mf.xla, "run_once_options", lambda: None)
  prior = mf.flows.from_config(mf.flows.RealNVPConfig(
      image_shape=(8, 8, 1), num_scales=2, num_blocks=1, hidden_channels=4,
      couplings_per_scale=2, final_couplings=2))
  x = jnp.full((2, 8, 8, 1), 0.5)
  params = prior.init(jax.random.PRNGKey(0), x)
  res = mf.recover(x, prior=prior, params=params,
                   operator=mf.operators.identity(),
                   noise=mf.noise.gaussian(0.1), beta=1.0, steps=2)
  assert np.all(np.isfinite(res.x))
  assert calls, "the solver's step did not ask for its XLA options"
  calls.clear()
  mf.training.make_train_step(prior, mf.training.TrainConfig(),
                              optax.adam(1e-3))
  assert calls, "the training step did not ask for its XLA options"
  # A refused option fails the compile: the options reach the compiler
  # (a new prior, so that no cached step is reused).
  monkeypatch.setattr(mf.xla, "step_options",
                      lambda: {FLAG: "NOT_A_FUSION_TYPE"})
  prior2 = mf.flows.from_config(prior.config)
  with pytest.raises(Exception, match="NOT_A_FUSION_TYPE"):
    mf.recover(x, prior=prior2, params=params,
               operator=mf.operators.identity(),
               noise=mf.noise.gaussian(0.1), beta=1.0, steps=2)
