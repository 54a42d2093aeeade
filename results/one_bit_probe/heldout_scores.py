"""Probe: 1-bit CS m=100 s=1, ours_heldout's configurations scored by the
unweighted held-out squared error (the current score) and by the held-out
Gaussian log-likelihood's weighting (1/sigma_i^2), and the test PSNR of each
score's choice."""
import csv, json, sys
import numpy as np
import jax.numpy as jnp
sys.path.insert(0, ".")  # run from the repository root
from recover import common
from recover.paper import cells, methods, protocol
from mapflow import holdout, metrics, noise as noise_lib
from mapflow import operators as ops

M = int(sys.argv[1]) if len(sys.argv) > 1 else 100
p = common.base_parser("probe", "probe")
common.add_method_args(p, protocol.PROTOCOLS["one_bit"].methods)
args = p.parse_args(["--out", f"/tmp/probe_ob{M}", "--methods", "ours,ours_heldout", "--no-ood", "--no-figures"])
for k, v in dict(m=800, scale=1.0, matrix_rows=3200).items():
  setattr(args, k, v)
sel = [r for r in csv.DictReader(open("results/one_bit/selection.csv"))
       if r["setting"] == f"m={M},s=1" and r["method"] == "ours_heldout"]
res = [r for r in csv.DictReader(open("results/one_bit/results.csv"))
       if r["setting"] == f"m={M},s=1"]
out = []
with common.make_context(args, "one_bit") as ctx:
  task = next(cells.one_bit_tasks(ctx, [(M, 1.0)], 3200))
  cell = cells._Cell(ctx, task, protocol.PROTOCOLS["one_bit"])
  meth = methods.METHODS["ours_heldout"]
  noise = cell.noise_of(meth)
  keep = holdout.holdout_keep(cell.y["val"].shape[1:])
  cell.op["val_fit"] = ops.masked(cell.op["val"], keep)
  cell.y["val_fit"] = cell.y["val"]
  std = np.broadcast_to(np.asarray(noise.std_map), cell.y["val"].shape[1:])
  print("y", cell.y["val"].shape, "held", int((1 - np.asarray(keep)).sum()), "active rows with y != 0:", int((np.abs(np.asarray(cell.y["val"][0])) > 0).sum()))
  w = (1.0 - np.asarray(keep)) / std ** 2
  for r in sel:
    start, value = methods.parse_start(r["start"]), float(r["hyper"])
    x_hat = cell.solve(meth, start, value, "val_fit")
    fx = np.asarray(cell.op["val"](x_hat))
    mu = np.broadcast_to(np.asarray(holdout.noise_mean(noise)), fx.shape[1:])
    rr = np.asarray(cell.y["val"]) - fx - mu
    r2 = rr ** 2
    held = 1.0 - np.asarray(keep)
    unw = float(np.mean(np.sum(r2 * held, 1) / held.sum()))
    wtd = float(np.mean(np.sum(r2 * w, 1) / w.sum()))
    act = (np.arange(r2.shape[1]) < M).astype(float)
    ha, wa = held * act, w * act
    unw_a = float(np.mean(np.sum(r2 * ha, 1) / ha.sum()))
    wtd_a = float(np.mean(np.sum(r2 * wa, 1) / wa.sum()))
    out.append(dict(start=r["start"], hyper=value, stored=float(r["val_score"]),
                    unweighted_db=-10 * np.log10(unw), weighted_db=-10 * np.log10(wtd),
                    active_db=-10 * np.log10(unw_a), active_weighted_db=-10 * np.log10(wtd_a)))
    print(out[-1], flush=True)
  bests = {k: max(out, key=lambda d: d[k]) for k in ("unweighted_db", "weighted_db", "active_db", "active_weighted_db")}
  for k, b in bests.items(): print(k, "choice", b)
  done = set()
  for tag, b in bests.items():
    if (b["start"], b["hyper"]) in done: continue
    done.add((b["start"], b["hyper"]))
    x = cell.solve(methods.METHODS["ours"], methods.parse_start(b["start"]), b["hyper"], "test")
    ps = np.asarray(metrics.psnr(cell.x["test"], x))[:64]
    print(tag, b["start"], b["hyper"], "test PSNR", float(ps.mean()), flush=True)
json.dump(out, open(f"/tmp/heldout_scores_m{M}.json", "w"), indent=1)
