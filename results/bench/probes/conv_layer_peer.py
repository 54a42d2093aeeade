# 2026-12-08; run from the repository root, alone:
#   OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python results/bench/probes/conv_layer_peer.py
# (JAXLIB_PATH=1 for jaxlib's default convolutions instead of mapflow.xla's)
"""One coupling-network layer, conv -> bias -> ReLU, in JAX (as the steps
compile it) and in PyTorch (2 threads, its default NCHW), at the shapes of
the shipped RealNVP (3x3, 32 -> 32, batch 64) and of the 64x64 Glow's first
level (3x3 12 -> 512 and 1x1 512 -> 512, batch 6): forward alone, and
forward + backward (gradients of the input, kernel and bias).  Best of 5
rounds of 30 calls each; the ratio is PyTorch's time over ours."""
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from mapflow import xla

torch.set_num_threads(2)
opts = None if os.environ.get("JAXLIB_PATH") else xla.step_options()


def best_ms(fn, n=30, rounds=5):
  fn()
  best = 1e9
  for _ in range(rounds):
    t = time.perf_counter()
    for _ in range(n):
      fn()
    best = min(best, (time.perf_counter() - t) / n)
  return best * 1e3


LAYERS = [  # (name, batch, hw, cin, cout, kernel)
    ("RealNVP 28x28", 64, 28, 32, 32, 3),
    ("RealNVP 14x14", 64, 14, 32, 32, 3),
    ("RealNVP 7x7", 64, 7, 32, 32, 3),
    ("Glow 32x32 in-conv", 6, 32, 12, 512, 3),
    ("Glow 32x32 1x1", 6, 32, 512, 512, 1),
]
rng = np.random.default_rng(0)
print(f"convolutions: {'jaxlib default' if opts is None else opts}")
for name, b, hw, cin, cout, k in LAYERS:
  xn = rng.standard_normal((b, hw, hw, cin), np.float32)
  wn = (rng.standard_normal((k, k, cin, cout)) * 0.05).astype(np.float32)
  bn = np.ones(cout, np.float32)
  x, w, bias = map(jnp.asarray, (xn, wn, bn))

  def layer(x, w, bias):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=(
        "NHWC", "HWIO", "NHWC"))
    return jnp.maximum(y + bias, 0)

  fwd = jax.jit(layer, compiler_options=opts)
  grads = jax.jit(jax.grad(lambda *a: jnp.sum(layer(*a) ** 2),
                           argnums=(0, 1, 2)), compiler_options=opts)
  jf = best_ms(lambda: fwd(x, w, bias).block_until_ready())
  jg = best_ms(lambda: jax.block_until_ready(grads(x, w, bias)))
  conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2)
  xt = torch.tensor(xn).permute(0, 3, 1, 2).contiguous()
  xg = xt.clone().requires_grad_(True)

  def t_fwd():
    with torch.no_grad():
      torch.relu(conv(xt))

  def t_grads():
    conv.zero_grad()
    xg.grad = None
    (torch.relu(conv(xg)) ** 2).sum().backward()

  pf, pg = best_ms(t_fwd), best_ms(t_grads)
  print(f"{name:20s} b{b}: forward ours {jf:6.2f} ms, PyTorch {pf:6.2f} "
        f"({pf / jf:.2f}x); forward+backward ours {jg:6.2f}, PyTorch "
        f"{pg:6.2f} ({pg / jg:.2f}x)", flush=True)
