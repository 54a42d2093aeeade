"""Cores used (CPU time over wall time) by recover's steps: the 64x64 Glow
CS step (batch 6) and the shipped RealNVP SINUSOIDAL step (batch 64).
Run from the repository root, with and without
XLA_FLAGS=--xla_force_host_platform_device_count=2."""
import time, resource, sys
import jax, jax.numpy as jnp, numpy as np
import mapflow as mf
from bench import peer_torch as pt
cfg = pt.glow_cs_config()
prior = mf.flows.from_config(cfg)
x = jax.random.uniform(jax.random.PRNGKey(0), (6,) + cfg.image_shape, minval=0.05, maxval=0.95)
params = prior.init(jax.random.PRNGKey(1), x)
op = mf.operators.gaussian(jax.random.PRNGKey(2), 2000, cfg.image_shape)
y = op(x)
run = lambda k: mf.recover_asim(y, prior=prior, params=params, operator=op, gamma=0.1, steps=k).x
jax.block_until_ready(run(3))
def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
for k in (3, 13):
    c0, t0 = cpu(), time.perf_counter(); jax.block_until_ready(run(k)); c1, t1 = cpu(), time.perf_counter()
    print(k, "wall", round(t1-t0,2), "cpu", round(c1-c0,2), "util", round((c1-c0)/(t1-t0),2))
# realnvp
prior, params = mf.pretrained.load("fashion_mnist_realnvp")
imgs = jnp.asarray(mf.data.demo_images()["fashion_mnist"], jnp.float32) / 255.0
xb = jnp.tile(imgs, (16, 1, 1, 1))[:64]
noise = mf.noise.sinusoidal((28,28,1), 0.4)
yb = xb + noise.sample(seed=jax.random.PRNGKey(0), sample_shape=(64,))
run = lambda k: mf.recover(yb, prior=prior, params=params, operator=mf.operators.identity(), noise=noise, beta=0.5, steps=k).x
jax.block_until_ready(run(3))
for k in (3, 23):
    c0, t0 = cpu(), time.perf_counter(); jax.block_until_ready(run(k)); c1, t1 = cpu(), time.perf_counter()
    print("rnvp", k, "wall", round(t1-t0,2), "cpu", round(c1-c0,2), "util", round((c1-c0)/(t1-t0),2))
