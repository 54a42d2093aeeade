"""1-bit CS: does the MAP objective (blind) prefer the start the oracle
prefers, at a fixed beta?  On ours_heldout's fit (80% of the rows), per
configuration: final MAP loss (mean over the 16 val images), held-out
score, val PSNR, cosine and norm ratio against the truth."""
import sys
import numpy as np
import jax.numpy as jnp
sys.path.insert(0, ".")  # run from the repository root
sys.path.insert(0, "results/one_bit_probe")
from probe_cell import one_bit_cell
from recover.paper import cells, methods, protocol
from mapflow import holdout, metrics, solve
from mapflow import operators as ops

M = int(sys.argv[1])
CONFIGS = [(s, float(b)) for s, b in (c.split(":") for c in sys.argv[2].split(","))]
last = {}
orig = solve.recover
def rec(*a, **k):
  r = orig(*a, **k); last["r"] = r; return r
solve.recover = rec
with one_bit_cell(M, 1.0, "ours,ours_heldout", f"/tmp/probe_obj{M}") as (task, cell):
  meth = methods.METHODS["ours_heldout"]
  noise = cell.noise_of(meth)
  keep = holdout.holdout_keep(cell.y["val"].shape[1:])
  cell._keep = keep
  cell.op["val_fit"] = ops.masked(cell.op["val"], keep)
  cell.y["val_fit"] = cell.y["val"]
  x = np.asarray(cell.x["val"]).reshape(len(cell.x["val"]), -1) - 0.5
  for start, beta in CONFIGS:
    xh = cell.solve(meth, methods.parse_start(start), beta, "val_fit")
    loss = float(np.mean(np.asarray(last["r"].loss)))
    measured = cell.op["val"].measurement_mask()
    err = holdout.heldout_error(noise, cell.y["val"], cell.op["val"](xh), keep, measured)
    score = float(-10 * np.log10(float(jnp.mean(err))))
    ps = float(np.mean(np.asarray(metrics.psnr(cell.x["val"], xh))))
    xf = np.asarray(xh).reshape(len(xh), -1) - 0.5
    cos = np.sum(x * xf, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(xf, axis=1)
    ratio = np.linalg.norm(xf, axis=1) / np.linalg.norm(x, axis=1)
    print(f"m={M} {start:12s} beta {beta}: loss {loss:.2f}  heldout {score:.3f} dB  val PSNR(fit) {ps:.2f}  cos {cos.mean():.3f}  |xh|/|x| {ratio.mean():.3f}", flush=True)
