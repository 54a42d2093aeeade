"""1-bit CS m=100: is the held-out score's preference for random starts a
direction-vs-norm effect?  For the two configurations, the val MAPs' cosine
with the truth (both centred at 0.5), their norms, and PSNR."""
import csv, sys
import numpy as np
sys.path.insert(0, ".")  # run from the repository root
sys.path.insert(0, "results/one_bit_probe")
from probe_cell import one_bit_cell
from recover.paper import cells, methods, protocol
from mapflow import metrics

M = 100
with one_bit_cell(M, 1.0, "ours", f"/tmp/probe_ang{M}") as (task, cell):
  meth = methods.METHODS["ours"]
  x = np.asarray(cell.x["val"]).reshape(len(cell.x["val"]), -1) - 0.5
  for start, beta in [("zeros@0.01", 0.1), ("random", 0.1), ("random", 0.05), ("zeros", 0.1), ("random@0.01", 0.1)]:
    xh = np.asarray(cell.solve(meth, methods.parse_start(start), beta, "val"))
    ps = float(np.mean(np.asarray(metrics.psnr(cell.x["val"], xh))))
    xh = xh.reshape(len(xh), -1) - 0.5
    cos = np.sum(x * xh, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(xh, axis=1)
    ratio = np.linalg.norm(xh, axis=1) / np.linalg.norm(x, axis=1)
    best = np.sum(x * xh, 1) / np.sum(xh * xh, 1)  # the MSE-optimal rescaling of xh
    ps_scaled = float(np.mean(-10 * np.log10(np.mean((best[:, None] * xh - x) ** 2, 1))))
    print(f"{start:12s} beta {beta}: val PSNR {ps:.2f}, cos {cos.mean():.3f}, |xh|/|x| {ratio.mean():.3f}, PSNR after the best rescaling {ps_scaled:.2f}", flush=True)
