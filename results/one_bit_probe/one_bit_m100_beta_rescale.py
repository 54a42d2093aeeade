"""1-bit CS m = 100: does refitting with beta scaled by m_all / m_fit (1.25)
fix the held-out choice's norm overshoot?  Run from the repository root:
args: SPLIT START/BETA ...  (README.md)."""
import sys, time
import numpy as np
sys.path.insert(0, ".")
sys.path.insert(0, "results/one_bit_probe")
from probe_cell import one_bit_cell
from recover.paper import methods
from mapflow import metrics
M = 100
split = sys.argv[1] if len(sys.argv) > 1 else "val"
with one_bit_cell(M, 1.0, "ours", f"/tmp/probe_resc{M}") as (task, cell):
  meth = methods.METHODS["ours"]
  xs = np.asarray(cell.x[split])
  x = xs.reshape(len(xs), -1) - 0.5
  for start, beta in [(s.split("/")[0], float(s.split("/")[1])) for s in sys.argv[2:]]:
    t = time.time()
    xh = np.asarray(cell.solve(meth, methods.parse_start(start), beta, split))
    ps = float(np.mean(np.asarray(metrics.psnr(cell.x[split], xh))))
    xh = xh.reshape(len(xh), -1) - 0.5
    ratio = np.linalg.norm(xh, axis=1) / np.linalg.norm(x, axis=1)
    print(f"{split} {start:12s} beta {beta}: PSNR {ps:.2f}, |xh|/|x| {ratio.mean():.3f} ({time.time()-t:.0f} s)", flush=True)
