"""Image metrics and the paper's equal-quality ratios."""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp


def mse(x, x_hat):
  """Mean squared error per example (mean over all axes but the first)."""
  d = jnp.square(jnp.asarray(x, jnp.float32) - jnp.asarray(x_hat, jnp.float32))
  return jnp.mean(d.reshape(d.shape[0], -1), axis=1)


def psnr(x, x_hat, data_range: float = 1.0):
  """PSNR in dB per example: ``10 log10(range^2 / mse)``."""
  return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(mse(x, x_hat), 1e-20))


def equal_quality_ratio(curve_a, curve_b) -> float:
  """The factor ``x_a / x_b`` at which curves a and b reach equal PSNR.

  Each curve is ``(xs, psnrs)`` over a noise scale or a measurement count.
  At every point ``(x_b, p_b)`` of b whose PSNR lies within a's range,
  curve a is interpolated linearly in ``log x`` to find ``x_a`` with
  ``psnr_a(x_a) = p_b``; the result is the geometric mean of ``x_a / x_b``.

  Examples: ``equal_quality_ratio(ours_vs_noise, bm3d_vs_noise) = 3`` means
  ours tolerates 3x BM3D's noise std at equal PSNR;
  ``equal_quality_ratio(asim_vs_m, ours_vs_m) = 2`` means Asim needs 2x
  ours's measurements.  Returns NaN when the PSNR ranges do not overlap.
  """
  xa, pa = (np.asarray(v, np.float64) for v in curve_a)
  xb, pb = (np.asarray(v, np.float64) for v in curve_b)
  for name, xs, ps in (("curve_a", xa, pa), ("curve_b", xb, pb)):
    if xs.shape != ps.shape or xs.ndim != 1 or xs.size < 2:
      raise ValueError(f"{name}: got xs {xs.shape} and psnrs {ps.shape}, "
                       "expected two 1-D arrays of equal length >= 2")
    if np.any(xs <= 0):
      raise ValueError(f"{name}: x-values must be > 0 for log interpolation")
  order = np.argsort(pa)
  pa_s, la_s = pa[order], np.log(xa[order])
  ratios = []
  for x, p in zip(xb, pb):
    if pa_s[0] <= p <= pa_s[-1]:
      ratios.append(np.exp(np.interp(p, pa_s, la_s)) / x)
  if not ratios:
    return float("nan")
  return float(np.exp(np.mean(np.log(ratios))))
