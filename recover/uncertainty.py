"""Posterior uncertainty on real data: is it calibrated?

python -m recover.uncertainty --out results/uncertainty [--tasks sinusoidal,cs]

For SINUSOIDAL denoising and Gaussian-measurement compressed sensing on the
protocol's 64 test images, draws posterior samples (``mapflow.
sample_posterior``, β = 1, from the MAP) and reports:

* the coverage of the per-pixel central 90% intervals (the share of true
  pixels inside; calibrated is 0.90);
* the correlation, over all pixels, between the predicted std and the
  actual error of the posterior mean;
* mean PSNR of the MAP and of the posterior mean;
* the chains' acceptance rates and effective sample sizes.

With ``--unknown-scale`` the noise's scale is not given to the sampler: it
is estimated from the measurements alone (``mapflow.holdout.
select_beta_and_scale``: a held-out choice of β·s² over ``--betas``, then
s from its MAP's held-out residuals), and the samples are drawn with the
noise at ŝ.  For isotropic noise (the CS task) ŝ is an upper bound.

Writes ``summary.json`` (and ``summary.csv``) and, per task, a figure with
the columns truth, measurement, MAP, posterior mean, std map, |error|.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

TASKS = ("sinusoidal", "cs")


def parse_args(argv=None):
  from recover.common import DEFAULT_PRIOR, _at_least_zero, _positive, _share
  p = argparse.ArgumentParser(prog="python -m recover.uncertainty",
                              description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True)
  p.add_argument("--prior", default=DEFAULT_PRIOR)
  p.add_argument("--tasks", default=",".join(TASKS),
                 help=f"comma-separated subset of {','.join(TASKS)}")
  p.add_argument("--scale", type=_positive(float), default=0.2,
                 help="SINUSOIDAL's noise scale s")
  p.add_argument("--m", type=_positive(int), default=400,
                 help="CS measurements")
  p.add_argument("--sigma", type=_positive(float), default=0.05,
                 help="CS's iid Gaussian noise std")
  p.add_argument("--num-test", type=_positive(int), default=64)
  p.add_argument("--samples", type=_positive(int), default=400,
                 help="posterior samples per image (pooled over chains)")
  p.add_argument("--chains", type=_positive(int), default=4)
  p.add_argument("--warmup", type=_at_least_zero(int), default=400)
  p.add_argument("--leapfrog", type=_positive(int), default=1,
                 help="leapfrog steps per draw: 1 is MALA, more is HMC "
                 "(that many gradients a draw)")
  p.add_argument("--target-accept", type=_share, default=None,
                 help="acceptance rate ε adapts toward (default 0.574 for "
                 "MALA, 0.7 for HMC)")
  p.add_argument("--level", type=float, default=0.9,
                 help="the intervals' nominal coverage")
  p.add_argument("--unknown-scale", action="store_true",
                 help="estimate the noise scale from held-out measurements "
                 "instead of giving the true one")
  p.add_argument("--betas", default="0.001,0.003,0.01,0.03,0.1,0.3,1",
                 help="β grid (at s = 1) of --unknown-scale's held-out choice")
  p.add_argument("--holdout-steps", type=_positive(int), default=100)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--data-dir")
  return p.parse_args(argv)


def calibration(x, samples, level=0.9):
  """Coverage of the per-pixel central ``level`` intervals and the
  correlation between predicted std and the posterior mean's error."""
  x = np.asarray(x)
  s = np.asarray(samples)                       # (S, B, H, W, C)
  tail = (1.0 - level) / 2.0
  lo, hi = np.quantile(s, [tail, 1.0 - tail], axis=0)
  mean, std = s.mean(axis=0), s.std(axis=0, ddof=1)
  err = np.abs(mean - x)
  inside = (x >= lo) & (x <= hi)
  corr = float(np.corrcoef(std.ravel(), err.ravel())[0, 1])
  return {"coverage": float(inside.mean()), "std_error_corr": corr,
          "mean_std": float(std.mean()), "mean_abs_error": float(err.mean()),
          "per_image_coverage": inside.reshape(len(x), -1).mean(1).tolist()}


def _estimate_scale(mf, task, y, prior, params, op, shape, args):
  """ŝ from held-out measurements, given only the noise's shape."""
  from mapflow import holdout
  try:
    betas = [float(b) for b in args.betas.split(",") if b]
  except ValueError:
    betas = []
  if not betas or min(betas) <= 0:
    raise SystemExit(f"--betas: got {args.betas!r}, expected comma-separated "
                     "positive numbers")
  unit = (mf.noise.sinusoidal(shape, 1.0) if task == "sinusoidal"
          else mf.noise.gaussian(1.0, (args.m,)))
  _, est = holdout.select_beta_and_scale(
      y, prior=prior, params=params, operator=op, unit_noise=unit,
      betas=betas, steps=args.holdout_steps)
  return est


# What makes a summary row: a rerun with all of these the same reuses it.
RUN_KEYS = ("task", "setting", "images", "prior", "seed", "samples",
            "chains", "warmup", "leapfrog", "target_accept", "level",
            "scale_estimated")


def main(argv=None):
  args = parse_args(argv)
  out = Path(args.out)
  from mapflow import io as io_lib
  # One writer per folder; a killed run keeps every finished task, and a
  # rerun with the same settings skips them.
  with io_lib.FolderLock(out, what="--out"):
    return _run(args, out)


def _run(args, out):
  import jax
  import jax.numpy as jnp
  import mapflow as mf
  from recover import common
  from recover.paper import protocol, figures
  tasks = [t for t in args.tasks.split(",") if t]
  if not tasks or set(tasks) - set(TASKS):
    raise SystemExit(f"--tasks: got {args.tasks!r}, expected a subset of "
                     f"{','.join(TASKS)}")
  if not 0.0 < args.level < 1.0:
    raise SystemExit(f"--level: got {args.level}, expected a share in (0, 1)")
  import json
  import time
  done = []
  if (out / "summary.json").is_file():
    done = json.loads((out / "summary.json").read_text())
  prior, params = common.load_prior(args.prior)
  x_all = mf.data.load("fashion_mnist", "test", args.data_dir)
  _, test = protocol.protocol_indices(len(x_all))
  test = test[:args.num_test]
  x = jnp.asarray(x_all[test].astype(np.float32) / 255.0)
  shape = tuple(x.shape[1:])
  key = jax.random.PRNGKey(args.seed)
  rows = []
  for task in tasks:
    k_noise, k_op, k_s = jax.random.split(jax.random.fold_in(key, len(task)),
                                          3)
    if task == "sinusoidal":
      op = mf.operators.identity()
      noise = mf.noise.sinusoidal(shape, args.scale)
      setting = f"s={args.scale:g}"
    else:
      op = mf.operators.gaussian(k_op, args.m, shape)
      noise = mf.noise.gaussian(args.sigma, (args.m,))
      setting = f"m={args.m},sigma={args.sigma:g}"
    y = op(x) + noise.sample(seed=k_noise, sample_shape=(len(x),))
    true_scale = args.scale if task == "sinusoidal" else args.sigma
    target = args.target_accept or (0.574 if args.leapfrog == 1 else 0.7)
    ident = {"task": task, "setting": setting, "images": int(len(x)),
             "prior": args.prior, "seed": args.seed,
             "samples": args.samples, "chains": args.chains,
             "warmup": args.warmup, "leapfrog": args.leapfrog,
             "target_accept": target, "level": args.level,
             "scale_estimated": bool(args.unknown_scale)}
    kept = [r for r in done if all(r.get(k) == ident[k] for k in RUN_KEYS)]
    if kept:
      common.say(f"{task} {setting}: kept from {out / 'summary.json'}")
      rows.append(kept[0])
      continue
    t0 = time.time()
    est = None
    if args.unknown_scale:
      est = _estimate_scale(mf, task, y, prior, params, op, shape, args)
      noise = (mf.noise.sinusoidal(shape, est.scale) if task == "sinusoidal"
               else mf.noise.gaussian(est.scale, (args.m,)))
      common.say(f"{task}: noise scale estimated {est.scale:.4f} (true "
                 f"{true_scale:g}{'' if est.identifiable else ', an upper bound'})")
    from tqdm.auto import tqdm
    bar = tqdm(total=args.warmup + -(-args.samples // args.chains),
               desc=f"{task} sampling", unit="step")
    cfg = mf.SamplerConfig(chains=args.chains, warmup=args.warmup,
                           target_accept=target,
                           progress=lambda i, n: bar.update(1))
    post = mf.sample_posterior(y, prior=prior, params=params, operator=op,
                               noise=noise, num_samples=args.samples,
                               key=k_s, config=cfg,
                               leapfrog_steps=args.leapfrog)
    bar.close()
    map_x = mf.recover(y, prior=prior, params=params, operator=op,
                       noise=noise, beta=1.0, steps=200).x
    cal = calibration(x, post.samples, args.level)
    row = {**ident, "true_scale": true_scale,
           "scale_used": true_scale if est is None else est.scale,
           "scale_identifiable": None if est is None else est.identifiable,
           "coverage": cal["coverage"],
           "std_error_corr": cal["std_error_corr"],
           "mean_std": cal["mean_std"],
           "mean_abs_error": cal["mean_abs_error"],
           "psnr_map": float(jnp.mean(mf.metrics.psnr(x, map_x))),
           "psnr_posterior_mean": float(jnp.mean(mf.metrics.psnr(
               x, post.mean))),
           "acceptance_mean": float(np.mean(post.acceptance)),
           "ess_median": float(np.median(post.ess)),
           "ess_min": float(np.min(post.ess)),
           "gradients_per_chain": (args.warmup + -(-args.samples //
                                                    args.chains))
           * args.leapfrog,
           "seconds": time.time() - t0}
    rows.append(row)
    common.say(f"{task} {setting}: coverage {row['coverage']:.3f} (nominal "
               f"{args.level:g}), std-error correlation "
               f"{row['std_error_corr']:.3f}, PSNR MAP {row['psnr_map']:.2f}"
               f" / posterior mean {row['psnr_posterior_mean']:.2f} dB, "
               f"acceptance {row['acceptance_mean']:.2f}, ESS median "
               f"{row['ess_median']:.0f}")
    k = min(6, len(x))
    shown = figures.y_shown(op, y[:k], shape) if task == "cs" else jnp.clip(
        y[:k], 0, 1)
    std = np.asarray(post.std[:k])
    err = np.abs(np.asarray(post.mean[:k]) - np.asarray(x[:k]))
    top = max(float(std.max()), float(err.max()), 1e-6)
    cols = [np.asarray(x[:k]), np.asarray(shown), np.clip(map_x[:k], 0, 1),
            np.clip(post.mean[:k], 0, 1), std / top, err / top]
    grid = np.stack(cols, axis=1)
    mf.viz.save_labelled_grid(
        out / f"{task}.png", grid.reshape((-1,) + grid.shape[2:]),
        ncols=len(cols), col_labels=["truth", "measurement", "MAP",
                                     "posterior mean", "std", "|error|"],
        row_labels=[f"test {int(i)}" for i in test[:k]], scale=3)
    _write(mf, out, rows, done)
  _write(mf, out, rows, done)
  return rows


def _write(mf, out, rows, done):
  """This run's rows, then earlier rows of other settings (kept, not
  lost), atomically."""
  mine = [tuple(r.get(k) for k in RUN_KEYS) for r in rows]
  every = rows + [r for r in done
                  if tuple(r.get(k) for k in RUN_KEYS) not in mine]
  mf.io.write_json_atomic(out / "summary.json", every)
  cols = list(dict.fromkeys(k for r in every for k in r))
  mf.io.write_csv_atomic(out / "summary.csv", every, cols)


if __name__ == "__main__":
  main()
