"""The MAP loss's value and gradient (shipped RealNVP, SINUSOIDAL, batch 64)
with the batch run as 1, 2 or 4 independent groups inside one program:
s/step, cores used, and whether the gradients are the same bits.
Run from the repository root with OPENBLAS_NUM_THREADS=1."""
import time, resource, sys
import jax, jax.numpy as jnp, numpy as np
import mapflow as mf
from mapflow import objectives as ob
prior, params = mf.pretrained.load("fashion_mnist_realnvp")
imgs = jnp.asarray(mf.data.demo_images()["fashion_mnist"], jnp.float32) / 255.0
B = 64
xb = jnp.tile(imgs, (16, 1, 1, 1))[:B]
noise = mf.noise.sinusoidal((28,28,1), 0.4)
yb = xb + noise.sample(seed=jax.random.PRNGKey(0), sample_shape=(B,))
z0 = jax.random.normal(jax.random.PRNGKey(1), xb.shape) * 0.5
op = mf.operators.identity()
def loss(z, y):
    return ob.map_loss(z, y, prior=prior, params=params, operator=op, noise=noise, beta=0.5)
def split_loss(z, y, k):
    n = z.shape[0] // k
    return jnp.concatenate([loss(z[i*n:(i+1)*n], y[i*n:(i+1)*n]) for i in range(k)])
def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
for k in (1, 2, 4):
    f = jax.jit(jax.value_and_grad(lambda z: jnp.sum(split_loss(z, yb, k))))
    v, g = f(z0); jax.block_until_ready(g)
    c0, t0 = cpu(), time.perf_counter()
    for _ in range(10):
        v, g = f(z0); jax.block_until_ready(g)
    c1, t1 = cpu(), time.perf_counter()
    print("groups", k, "s/step", round((t1-t0)/10, 4), "util", round((c1-c0)/(t1-t0), 2), "grad", float(jnp.sum(jnp.abs(g))))
gs = {}
for k in (1, 2):
    f = jax.jit(jax.value_and_grad(lambda z: jnp.sum(split_loss(z, yb, k))))
    gs[k] = np.asarray(f(z0)[1])
print("bit-identical grads:", np.array_equal(gs[1], gs[2]), np.abs(gs[1]-gs[2]).max())
