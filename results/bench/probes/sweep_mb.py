"""Sweep (5 beta x 6 m, 16 images, 20 steps, 1-bit CS) in groups of at most
max_batch images per call, against sequential recover calls; alternating
rounds, compile excluded (one warm call each first)."""
import time, sys
import jax, jax.numpy as jnp
import mapflow as mf
from bench import sections
from bench.__main__ import FULL
ctx = sections.Context(dict(FULL))
betas = jnp.asarray(FULL["sweep_betas"]); ms = jnp.asarray(FULL["sweep_ms"])
_, op, noise, y = sections.one_bit_problem(ctx, 16, int(max(ms)))
kw = sections._recover_kw(ctx, op, noise)
seq_kw = dict(kw); seq_kw.pop("operator")
def seq(steps):
    return [mf.recover(y, operator=mf.operators.with_active(op, m), beta=b, steps=steps, **seq_kw).x for b in betas for m in ms]
def sw(mb, steps):
    return mf.sweep(y, betas=betas, ms=ms, steps=steps, config=mf.SolverConfig(max_batch=mb), **kw).x
mbs = [int(a) for a in sys.argv[1:]] or [32, 64, 128, 256]
jax.block_until_ready(seq(1))
for mb in mbs: jax.block_until_ready(sw(mb, 1))
res = {k: [] for k in ["seq"] + mbs}
for r in range(2):
    for k in ["seq"] + mbs:
        t0 = time.perf_counter()
        jax.block_until_ready(seq(20) if k == "seq" else sw(k, 20))
        res[k].append(time.perf_counter() - t0)
for k, v in res.items():
    print(k, [round(a, 2) for a in v], "speedup vs seq", round(min(res["seq"]) / min(v), 3) if k != "seq" else "")
