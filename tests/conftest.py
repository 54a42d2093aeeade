import os

from mapflow import xla

# The suite is dominated by XLA:CPU compile time of small flows, not by
# running them: the cheapest backend optimisation level compiles ~2.5x
# faster, and XLA's older loop emitters take a third off that
# (mapflow.xla.quick_compile_flags).  One eigen thread keeps tests from
# fighting a background job.  The same list in every process (xdist's
# workers inherit the flags already added), so that test_reproduce can
# strip them all.
_FLAGS = " ".join(["--xla_cpu_multi_thread_eigen=false",
                   "--xla_llvm_disable_expensive_passes=true"]
                  + xla.quick_compile_flags(xla_flags=""))
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAGS).strip()


import pytest  # noqa: E402


def pytest_configure(config):
  """One persistent compilation cache per test run, shared by the xdist
  workers and the command lines the tests start (they inherit the
  environment): the same flows' programs are otherwise compiled again in
  every subprocess.  A cached program is the same executable, so results
  are bit-identical with or without it."""
  if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return
  import tempfile
  config._mapflow_jax_cache = tempfile.mkdtemp(prefix="mapflow-tests-jax-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = config._mapflow_jax_cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.3"


def pytest_unconfigure(config):
  import shutil
  d = getattr(config, "_mapflow_jax_cache", None)
  if d:
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory):
  """A checkpoint of a tiny untrained 28x28 RealNVP, for command lines run
  end to end (skips without the Fashion-MNIST IDX files they read)."""
  import jax
  import jax.numpy as jnp
  import mapflow as mf
  from mapflow import data
  try:
    data.load("fashion_mnist", "test")
  except data.DatasetNotFoundError:
    pytest.skip("Fashion-MNIST IDX files not installed")
  cfg = mf.flows.RealNVPConfig(image_shape=(28, 28, 1), num_scales=2,
                               num_blocks=1, hidden_channels=4,
                               couplings_per_scale=1, final_couplings=1)
  flow = mf.flows.from_config(cfg)
  params = flow.init(jax.random.PRNGKey(0), jnp.full((2, 28, 28, 1), 0.5))
  path = tmp_path_factory.mktemp("prior") / "tiny"
  mf.checkpoint.save(path, params, cfg)
  return str(path)
