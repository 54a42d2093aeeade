"""1-bit CS m=100: is the held-out score's preference for random starts a
direction-vs-norm effect?  For the two configurations, the val MAPs' cosine
with the truth (both centred at 0.5), their norms, and PSNR."""
import csv, sys
import numpy as np
from recover import common
from recover.paper import cells, methods, protocol
from mapflow import metrics

M = 100
p = common.base_parser("probe", "probe")
common.add_method_args(p, protocol.PROTOCOLS["one_bit"].methods)
args = p.parse_args(["--out", f"/tmp/probe_ang{M}", "--methods", "ours", "--no-ood", "--no-figures"])
for k, v in dict(m=800, scale=1.0, matrix_rows=3200).items():
  setattr(args, k, v)
with common.make_context(args, "one_bit") as ctx:
  task = next(cells.one_bit_tasks(ctx, [(M, 1.0)], 3200))
  cell = cells._Cell(ctx, task, protocol.PROTOCOLS["one_bit"])
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
