"""Image metrics and the paper's equal-quality ratios."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


def _check_pair(x, x_hat):
  """Refuses images that would broadcast into a wrong answer."""
  sx, sh = jnp.shape(x), jnp.shape(x_hat)
  if sx != sh or len(sx) < 2:
    raise ValueError(f"x_hat: got shape {sh}, expected x's shape {sx} (a "
                     "batch: examples first)")


def mse(x, x_hat):
  """Mean squared error per example (mean over all axes but the first)."""
  _check_pair(x, x_hat)
  return _mse(x, x_hat)


def _mse(x, x_hat):
  d = jnp.square(jnp.asarray(x, jnp.float32) - jnp.asarray(x_hat, jnp.float32))
  return jnp.mean(d.reshape(d.shape[0], -1), axis=1)


def psnr(x, x_hat, data_range: Optional[float] = None):
  """PSNR in dB per example: ``10 log10(range^2 / mse)``.  ``data_range``
  defaults to 1 for float images (in [0, 1]); integer images (0..255)
  need it said."""
  x, x_hat = jnp.asarray(x), jnp.asarray(x_hat)
  _check_pair(x, x_hat)
  if data_range is None:
    if any(jnp.issubdtype(jnp.result_type(a), jnp.integer)
           for a in (x, x_hat)):
      raise ValueError("data_range: got None with integer images, expected "
                       "their range (255 for 8-bit images), or float images "
                       "in [0, 1]")
    data_range = 1.0
  elif not isinstance(data_range, jax.core.Tracer):
    r = np.asarray(data_range, np.float64)
    if not (np.all(np.isfinite(r)) and np.all(r > 0)):
      raise ValueError(f"data_range: got {data_range!r}, expected positive "
                       "numbers")
  return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(_mse(x, x_hat), 1e-20))


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


def paired_bootstrap(statistic, samples, *, num_resamples: int = 2000,
                     level: float = 0.95, seed: int = 0):
  """A statistic over examples, with a paired bootstrap interval.

  ``samples`` is a dict (or sequence) of arrays sharing a leading example
  axis of length N (e.g. per-image PSNR of each method at each setting,
  images in the same order).  Each resample draws N example indices with
  replacement and applies the same indices to every array (paired), then
  evaluates ``statistic`` on the resampled dict.  Returns ``(point, lo,
  hi, n_finite)``: the statistic on the data, the ``level`` percentile
  interval over the resamples whose statistic is finite, and how many were
  (a ratio of curves that no longer overlap is NaN).
  """
  if not 0.0 < level < 1.0:
    raise ValueError(f"level: got {level!r}, expected a value in (0, 1)")
  if not isinstance(num_resamples, int) or num_resamples < 1:
    raise ValueError(f"num_resamples: got {num_resamples!r}, expected an "
                     "int >= 1")
  keys = list(samples.keys()) if isinstance(samples, dict) else None
  arrays = [np.asarray(v) for v in (samples.values() if keys is not None
                                    else samples)]
  lengths = {a.shape[0] if a.ndim else None for a in arrays}
  if len(lengths) != 1 or None in lengths or not arrays:
    raise ValueError(f"samples: got leading lengths {sorted(map(str, lengths))}"
                     ", expected arrays sharing one example axis")
  n = lengths.pop()
  pack = ((lambda arrs: dict(zip(keys, arrs))) if keys is not None
          else (lambda arrs: list(arrs)))
  point = float(statistic(pack(arrays)))
  rng = np.random.default_rng(seed)
  stats = np.empty(num_resamples)
  for i in range(num_resamples):
    idx = rng.integers(0, n, n)
    stats[i] = statistic(pack([a[idx] for a in arrays]))
  good = stats[np.isfinite(stats)]
  if good.size == 0:
    return point, float("nan"), float("nan"), 0
  tail = 100.0 * (1.0 - level) / 2.0
  lo, hi = np.percentile(good, [tail, 100.0 - tail])
  return point, float(lo), float(hi), int(good.size)
