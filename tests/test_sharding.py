"""Data parallelism: sharded results equal unsharded ones.

Runs in a subprocess with four simulated CPU devices
(``--xla_force_host_platform_device_count=4``), since the device count is
fixed when JAX starts.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mapflow import sharding

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    import mapflow as mf
    from mapflow import training
    assert len(jax.devices()) == 4, jax.devices()
    one = jax.devices()[:1]
    cfg = mf.flows.RealNVPConfig(image_shape=(8, 8, 1), num_scales=2,
                                 num_blocks=1, hidden_channels=4,
                                 couplings_per_scale=1, final_couplings=1)
    prior = mf.flows.from_config(cfg)
    key = jax.random.PRNGKey(0)
    params = prior.init(key, jnp.full((2, 8, 8, 1), 0.5))
    x = jax.random.uniform(key, (6, 8, 8, 1), minval=0.2, maxval=0.8)
    noise = mf.noise.sinusoidal((8, 8, 1), 0.3)
    y = x + noise.sample(seed=key, sample_shape=(6,))
    kw = dict(prior=prior, params=params, operator=mf.operators.identity(),
              noise=noise, steps=4, optimizer=optax.adam(1e-2))
    start = mf.SolverConfig(init="measurements", restarts=2)
    # 6 examples over 4 devices: padded to 8, the padding dropped.
    r4 = mf.recover(y, beta=0.5, config=start, **kw)
    r1 = mf.recover(y, beta=0.5, config=start._replace(devices=one), **kw)
    assert r4.x.shape == (6, 8, 8, 1) and r4.trace.shape == (4, 6)
    np.testing.assert_allclose(r4.x, r1.x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r4.loss, r1.loss, rtol=1e-5, atol=1e-4)
    # Per-example operators, padded with the batch (3 images, 4 devices).
    masks = mf.operators.batched([mf.operators.mask(
        jax.random.PRNGKey(i), (8, 8, 1)) for i in range(3)])
    kb = dict(kw, operator=masks, noise=mf.noise.gaussian(0.1))
    rs = mf.SolverConfig(init="random", restarts=3)
    b4 = mf.recover(masks(x[:3]), beta=0.5, config=rs, **kb)
    b1 = mf.recover(masks(x[:3]), beta=0.5, config=rs._replace(devices=one),
                    **kb)
    np.testing.assert_allclose(b4.x, b1.x, rtol=1e-5, atol=1e-5)
    s4 = mf.sweep(y, betas=[0.1, 1.0], config=start, **kw)
    s1 = mf.sweep(y, betas=[0.1, 1.0], config=start._replace(devices=one),
                  **kw)
    np.testing.assert_allclose(s4.x, s1.x, rtol=1e-5, atol=1e-5)
    # Training: a batch of 8 split 2 per device, state replicated.
    tc = training.TrainConfig(batch_size=8, learning_rate=1e-3,
                              halve_every=100, log=training.LogSchedule(
                                  eval_every=0, sample_every=0,
                                  checkpoint_every=100, log_every=1,
                                  eval_batch=16, eval_limit=16))
    xs = np.random.RandomState(0).randint(0, 256, (32, 8, 8, 1)).astype(
        np.uint8)
    import dataclasses, tempfile
    d = tempfile.mkdtemp()
    a = training.train(cfg, tc, xs, xs[:16], d + "/a", 3, progress=False)
    b = training.train(cfg, tc, xs, xs[:16], d + "/b", 3, progress=False,
                       devices=one)
    for u, v in zip(jax.tree_util.tree_leaves(a.params),
                    jax.tree_util.tree_leaves(b.params)):
      np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)
    try:
      training.train(cfg, dataclasses.replace(tc, batch_size=6), xs,
                     xs[:16], d + "/c", 1, progress=False)
      raise SystemExit("batch 6 over 4 devices should fail")
    except ValueError as e:
      assert "multiple" in str(e), e
    print("SHARDED_OK")
""")


@pytest.mark.slow  # about 70 s on an AVX2-only 2-core CPU
def test_sharded_results_equal_unsharded():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=4").strip()
  env["JAX_PLATFORMS"] = "cpu"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  out = subprocess.run([sys.executable, "-c", SCRIPT], env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "SHARDED_OK" in out.stdout


def test_pad_along_repeats_the_last_entry():
  a = jnp.arange(5.0).reshape(5, 1)
  p, n = sharding.pad_along(a, 4)
  assert n == 3 and p.shape == (8, 1)
  np.testing.assert_array_equal(p[:, 0], [0, 1, 2, 3, 4, 4, 4, 4])
  same, n = sharding.pad_along(a, 5)
  assert n == 0 and same is a


def test_empty_device_list_is_named():
  with pytest.raises(ValueError, match="devices"):
    sharding.batch_mesh([])
