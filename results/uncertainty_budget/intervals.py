"""Per-image intervals for the budget table (docs/uncertainty.md): each
budget's 90% coverage and posterior-mean PSNR as mean ± standard error
over the 4 images, and the paired gains from one budget to the next.
Reads the committed parts; run from the repository root."""
import glob

import numpy as np


def se(a):
  return a.std(ddof=1) / np.sqrt(len(a))


prev = None
for b in ("1x", "10x", "20x"):
  d = np.load(glob.glob(f"results/uncertainty_budget/budget_{b}/parts/*/"
                        "chunk000.npz")[0])
  cov = d["inside"].reshape(len(d["ids"]), -1).mean(1)
  ps = d["psnr_mean"]
  print(f"{b}: coverage {cov.mean():.3f} ± {se(cov):.3f}, posterior mean "
        f"{ps.mean():.2f} ± {se(ps):.2f} dB")
  if prev is not None:
    dc, dp = cov - prev[0], ps - prev[1]
    print(f"  gain: coverage {dc.mean():+.3f} ± {se(dc):.3f} (every image "
          f"{'up' if dc.min() > 0 else 'not up'}), PSNR {dp.mean():+.2f} ± "
          f"{se(dp):.2f} dB")
  prev = (cov, ps)
lap = d["laplace_inside"].reshape(len(d["ids"]), -1).mean(1)
print(f"Laplace alone: coverage {lap.mean():.3f} ± {se(lap):.3f}")
