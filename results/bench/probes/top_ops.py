# 2026-12-07, with mapflow.xla (XLA convolutions); run from the repository root with PYTHONPATH=. OPENBLAS_NUM_THREADS=1
"""Top XLA ops by summed duration in the RealNVP SINUSOIDAL MAP step (b64),
on mapflow's convolutions: which elementwise fusions dominate."""
import glob, tempfile, collections, re
import jax, jax.numpy as jnp
import mapflow as mf
from bench import sections
prior, params = mf.pretrained.load("fashion_mnist_realnvp")
imgs = jnp.asarray(mf.data.demo_images()["fashion_mnist"], jnp.float32) / 255.0
xb = jnp.tile(imgs, (16, 1, 1, 1))[:64]
noise = mf.noise.sinusoidal((28, 28, 1), 0.4)
yb = xb + noise.sample(seed=jax.random.PRNGKey(0), sample_shape=(64,))
run = lambda: mf.recover(yb, prior=prior, params=params, operator=mf.operators.identity(), noise=noise, beta=0.5, steps=1).x
jax.block_until_ready(run())
ms, cnt, lines_seen = collections.Counter(), collections.Counter(), collections.Counter()
with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
        for _ in range(3):
            jax.block_until_ready(run())
    data = jax.profiler.ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0])
for plane in data.planes:
    for line in plane.lines:
        for ev in line.events:
            k = sections.op_kind(ev.name)
            if k is None:
                continue
            base = re.sub(r"[._]\d+$", "", ev.name)
            ms[(k, base)] += ev.duration_ns / 3e6
            cnt[(k, base)] += 1 / 3
            lines_seen[(plane.name, line.name)] += 1
for (k, n), v in ms.most_common(25):
    print(f"{v:8.2f} ms {cnt[(k, n)]:8.0f} x  {k:24s} {n}")
print("lines:", lines_seen.most_common(6))
