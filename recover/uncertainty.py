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
* the chains' acceptance rates and effective sample sizes;
* with ``--calibration-images N`` (default 16, the protocol's validation
  images), split-conformal intervals ``mean ± q·std``: q is fitted on
  those images' truth (``mapflow.conformal_std_scale``), and their
  coverage on the test images is reported beside the raw one.

Images are sampled ``--chunk`` at a time, and each finished chunk is kept
under ``parts/``: a killed run resumes from its last chunk.

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
  from recover import common
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
  p.add_argument("--preconditioner", choices=("adaptive", "laplace"),
                 default="adaptive",
                 help="the chains' preconditioner (mapflow.sample_posterior): "
                 "a diagonal one adapted in warmup, or the Laplace "
                 "approximation's whitening at the MAP (default adaptive)")
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
  p.add_argument("--calibration-images", type=_at_least_zero(int),
                 default=16, help="validation images (the protocol's) the "
                 "conformal width is fitted on; 0 for none")
  p.add_argument("--chunk", type=_positive(int), default=16,
                 help="images per sampler call; each finished chunk is kept, "
                 "so a killed run resumes")
  p.add_argument("--seed", type=common.SEED, default=0)
  p.add_argument("--data-dir")
  args = p.parse_args(argv)
  if args.calibration_images > 16:
    p.error(f"--calibration-images: got {args.calibration_images}, "
            "expected at most 16 (the protocol's validation images)")
  if args.num_test > 64:
    p.error(f"--num-test: got {args.num_test}, expected at most 64 (the "
            "protocol's test images)")
  if not 0.0 < args.level < 1.0:
    p.error(f"--level: got {args.level}, expected a share in (0, 1)")
  if args.samples < 2:
    p.error(f"--samples: got {args.samples}, expected at least 2 (a std "
            "needs two draws)")
  tasks = [t for t in args.tasks.split(",") if t]
  if not tasks or set(tasks) - set(TASKS):
    p.error(f"--tasks: got {args.tasks!r}, expected a subset of "
            f"{','.join(TASKS)}")
  args.task_list = list(dict.fromkeys(tasks))  # in order, each once
  args.beta_values = common.parse_floats("--betas", args.betas)
  common.check_out_folder(args.out)
  return args


def _inside(x, samples, level):
  """Whether each pixel of ``x`` lies in its samples' central ``level``
  interval."""
  tail = (1.0 - level) / 2.0
  lo, hi = np.quantile(samples, [tail, 1.0 - tail], axis=0)
  return (x >= lo) & (x <= hi)


def calibration(x, samples, level=0.9):
  """Coverage of the per-pixel central ``level`` intervals and the
  correlation between predicted std and the posterior mean's error."""
  x = np.asarray(x)
  s = np.asarray(samples)                       # (S, B, H, W, C)
  mean, std = s.mean(axis=0), s.std(axis=0, ddof=1)
  err = np.abs(mean - x)
  inside = _inside(x, s, level)
  corr = float(np.corrcoef(std.ravel(), err.ravel())[0, 1])
  return {"coverage": float(inside.mean()), "std_error_corr": corr,
          "mean_std": float(std.mean()), "mean_abs_error": float(err.mean()),
          "per_image_coverage": inside.reshape(len(x), -1).mean(1).tolist()}


def _estimate_scale(mf, task, y, prior, params, op, shape, args):
  """ŝ from held-out measurements, given only the noise's shape."""
  from mapflow import holdout
  unit = (mf.noise.sinusoidal(shape, 1.0) if task == "sinusoidal"
          else mf.noise.gaussian(1.0, (args.m,)))
  _, est = holdout.select_beta_and_scale(
      y, prior=prior, params=params, operator=op, unit_noise=unit,
      betas=args.beta_values, steps=args.holdout_steps)
  return est


# What makes a summary row: a rerun with all of these the same reuses it.
# What a kept chunk was sampled with (its folder's name hashes them).
CHUNK_KEYS = ("task", "setting", "images", "prior", "seed", "samples",
              "chains", "warmup", "leapfrog", "target_accept", "level",
              "scale_estimated", "calibration_images", "chunk",
              "preconditioner")
# Rows and chunks made before a key existed had its value here.
LEGACY = {"preconditioner": "adaptive"}
# How the conformal width is ranked (``mf.conformal_std_scale``): rows made
# under the first rule (over pixels) are not reused, their chunks are.
CONFORMAL_RANK = "images"
RUN_KEYS = CHUNK_KEYS + ("conformal_rank",)


def main(argv=None):
  args = parse_args(argv)
  out = Path(args.out)
  from mapflow import io as io_lib
  # One writer per folder; a killed run keeps every finished task, and a
  # rerun with the same settings skips them.
  lock = io_lib.FolderLock(out, what="--out")
  try:
    lock.acquire()
  except io_lib.LockedError as e:
    raise SystemExit(str(e)) from None
  try:
    return _run(args, out)
  finally:
    lock.release()


def _chunk_path(out, ident, index: int, extra=None) -> Path:
  """``extra``: what else the samples depend on (an estimated scale)."""
  import hashlib
  import json
  # (a legacy value is left out, so older chunks keep their names)
  what = {k: ident[k] for k in CHUNK_KEYS
          if k not in LEGACY or ident[k] != LEGACY[k]}
  if extra:
    what["extra"] = extra
  tag = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
  return out / "parts" / f"{ident['task']}-{tag[:12]}" / f"chunk{index:03d}.npz"


def _sample_chunk(mf, args, ident, x, y, ids, role, prior, params, op, noise,
                  key, bar):
  """One chunk's per-image results (kept under ``parts/``)."""
  import time
  t0 = time.time()
  target = ident["target_accept"]
  cfg = mf.SamplerConfig(chains=args.chains, warmup=args.warmup,
                         target_accept=target,
                         progress=lambda i, n: bar.update(1))
  post = mf.sample_posterior(y, prior=prior, params=params, operator=op,
                             noise=noise, num_samples=args.samples, key=key,
                             config=cfg, leapfrog_steps=args.leapfrog,
                             preconditioner=ident["preconditioner"])
  map_x = mf.recover(y, prior=prior, params=params, operator=op, noise=noise,
                     beta=1.0, steps=200).x
  s = np.asarray(post.samples)
  extra = {}
  if post.laplace is not None:
    # The Laplace approximation's own intervals, image ± z·std around G(ẑ).
    from scipy.stats import norm
    lap_x, lap_std = (np.asarray(a, np.float32) for a in
                      (post.laplace.image, post.laplace.image_std))
    z = norm.ppf(0.5 + args.level / 2)
    extra = {"laplace_image": lap_x, "laplace_std": lap_std,
             "laplace_inside": (np.abs(np.asarray(x) - lap_x)
                                <= z * lap_std).astype(np.uint8)}
  return {**extra, "ids": np.asarray(ids), "role": np.asarray(role),
          "mean": np.asarray(post.mean, np.float32),
          "std": np.asarray(s.std(axis=0, ddof=1), np.float32),
          "inside": _inside(np.asarray(x), s, args.level).astype(np.uint8),
          "map": np.asarray(map_x, np.float32),
          "psnr_map": np.asarray(mf.metrics.psnr(x, map_x)),
          "psnr_mean": np.asarray(mf.metrics.psnr(x, post.mean)),
          "acceptance": np.asarray(post.acceptance),
          "ess": np.asarray(post.ess),
          "seconds": np.asarray(time.time() - t0)}


CHUNK_ARRAYS = ("ids", "role", "mean", "std", "inside", "map", "psnr_map",
                "psnr_mean", "acceptance", "ess")


LAPLACE_ARRAYS = ("laplace_image", "laplace_std", "laplace_inside")


def _load_chunk(path, ids, role, chains: int, shape, laplace: bool = False):
  """A kept chunk, if it is whole and the one asked for (else None: it is
  sampled again); ``laplace``: it must hold the Laplace arrays too."""
  if not path.is_file():
    return None
  try:
    with np.load(path) as f:
      got = {k: f[k] for k in f.files}
  except Exception:  # truncated or not an npz: sample it again
    return None
  n = len(ids)
  need = CHUNK_ARRAYS + (LAPLACE_ARRAYS if laplace else ())
  if (set(need) - set(got) or list(got["ids"]) != list(ids)
      or str(got["role"]) != role
      or any(got[k].shape != (n,) + tuple(shape) for k in need
             if k in ("mean", "std", "inside", "map") + LAPLACE_ARRAYS)
      or any(got[k].shape != (n,) for k in ("psnr_map", "psnr_mean"))
      or any(got[k].shape != (chains, n) for k in ("acceptance", "ess"))):
    return None
  return got


def _run(args, out):
  import jax
  import jax.numpy as jnp
  import mapflow as mf
  from recover import common
  from recover.paper import protocol, figures
  tasks = args.task_list
  import json
  import time
  done = []
  if (out / "summary.json").is_file():
    done = json.loads((out / "summary.json").read_text())
  prior, params = common.load_prior(args.prior)
  try:
    x_all = mf.data.load("fashion_mnist", "test", args.data_dir)
  except mf.data.DatasetNotFoundError as e:
    raise common.cli_error("--data-dir", e) from None
  val, test = protocol.protocol_indices(len(x_all))
  test = test[:args.num_test]
  cal = val[:args.calibration_images]
  n_cal = len(cal)
  # Calibration images first; each image's noise is its own whatever the
  # chunking.
  ids = np.concatenate([cal, test]).astype(int)
  x = jnp.asarray(x_all[ids].astype(np.float32) / 255.0)
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
    y = op(x) + jnp.concatenate([
        noise.sample(seed=jax.random.fold_in(k_noise, 1),
                     sample_shape=(n_cal,)),
        noise.sample(seed=k_noise, sample_shape=(len(test),))])
    true_scale = args.scale if task == "sinusoidal" else args.sigma
    target = args.target_accept or (0.574 if args.leapfrog == 1 else 0.7)
    ident = {"task": task, "setting": setting, "images": int(len(test)),
             "prior": args.prior, "seed": args.seed,
             "samples": args.samples, "chains": args.chains,
             "warmup": args.warmup, "leapfrog": args.leapfrog,
             "target_accept": target, "level": args.level,
             "scale_estimated": bool(args.unknown_scale),
             "calibration_images": n_cal, "chunk": args.chunk,
             "preconditioner": args.preconditioner,
             "conformal_rank": CONFORMAL_RANK}
    kept = [r for r in done
            if all(r.get(k, LEGACY.get(k)) == ident[k] for k in RUN_KEYS)]
    if kept:
      common.say(f"{task} {setting}: kept from {out / 'summary.json'}")
      rows.append({**{k: v for k, v in LEGACY.items() if k not in kept[0]},
                   **kept[0]})
      continue
    t0 = time.time()
    est, extra = None, None
    if args.unknown_scale:
      # From every measurement, calibration images' too: the two stay
      # exchangeable.
      est = _estimate_scale(mf, task, y, prior, params, op, shape, args)
      extra = {"scale": round(float(est.scale), 6), "betas": args.betas,
               "holdout_steps": args.holdout_steps}
      noise = (mf.noise.sinusoidal(shape, est.scale) if task == "sinusoidal"
               else mf.noise.gaussian(est.scale, (args.m,)))
      common.say(f"{task}: noise scale estimated {est.scale:.4f} (true "
                 f"{true_scale:g}{'' if est.identifiable else ', an upper bound'})")
    from tqdm.auto import tqdm
    # Calibration and test images are chunked apart.
    spans = [(a, min(a + args.chunk, n_cal), "cal")
             for a in range(0, n_cal, args.chunk)]
    spans += [(a, min(a + args.chunk, len(ids)), "test")
              for a in range(n_cal, len(ids), args.chunk)]
    per_chunk = args.warmup + -(-args.samples // args.chains)
    bar = tqdm(total=per_chunk * len(spans), desc=f"{task} sampling",
               unit="step")
    parts = []
    for i, (a, b, role) in enumerate(spans):
      path = _chunk_path(out, ident, i, extra)
      # A killed writer's temporary (this process holds the folder's lock).
      mf.io.remove_orphans(path.parent, [path.name])
      got = _load_chunk(path, ids[a:b], role, args.chains, shape,
                        laplace=args.preconditioner == "laplace")
      if got is None:
        got = _sample_chunk(mf, args, ident, x[a:b], y[a:b], ids[a:b], role,
                            prior, params, op, noise,
                            jax.random.fold_in(k_s, i), bar)
        mf.io.write_npz_atomic(path, **got)
      else:
        bar.update(per_chunk)
      parts.append(got)
    bar.close()
    cat = lambda k, r: np.concatenate([p[k] for p in parts
                                       if str(p["role"]) == r])
    xt = np.asarray(x[n_cal:])
    mean, std = cat("mean", "test"), cat("std", "test")
    err = np.abs(mean - xt)
    row = {**ident, "true_scale": true_scale,
           "scale_used": true_scale if est is None else est.scale,
           "scale_identifiable": None if est is None else est.identifiable,
           "coverage": float(cat("inside", "test").mean()),
           "std_error_corr": float(np.corrcoef(std.ravel(),
                                               err.ravel())[0, 1]),
           "mean_std": float(std.mean()),
           "mean_abs_error": float(err.mean()),
           "psnr_map": float(np.mean(cat("psnr_map", "test"))),
           "psnr_posterior_mean": float(np.mean(cat("psnr_mean", "test"))),
           "acceptance_mean": float(np.mean(np.concatenate(
               [p["acceptance"] for p in parts if str(p["role"]) == "test"],
               axis=1))),
           "ess_median": float(np.median(np.concatenate(
               [p["ess"] for p in parts if str(p["role"]) == "test"],
               axis=1))),
           "ess_min": float(np.min(np.concatenate(
               [p["ess"] for p in parts if str(p["role"]) == "test"],
               axis=1))),
           "gradients_per_chain": per_chunk * args.leapfrog,
           # This run's wall time; sampling_seconds sums the chunks' own
           # (None where a chunk kept by older code did not record it).
           "seconds": time.time() - t0,
           "sampling_seconds": (
               float(sum(float(p["seconds"]) for p in parts))
               if all("seconds" in p for p in parts) else None)}
    if args.preconditioner == "laplace":
      # The Laplace approximation alone (no sampling): G(ẑ) ± z·std.
      lap_err = np.abs(cat("laplace_image", "test") - xt)
      lap_std = cat("laplace_std", "test")
      corr = float(np.corrcoef(lap_std.ravel(), lap_err.ravel())[0, 1])
      row.update(coverage_laplace=float(cat("laplace_inside", "test").mean()),
                 # (JSON has no NaN: None where a std is constant)
                 laplace_std_error_corr=corr if np.isfinite(corr) else None,
                 mean_laplace_std=float(lap_std.mean()))
    if n_cal:
      q = mf.conformal_std_scale(np.asarray(x[:n_cal]), cat("mean", "cal"),
                                 cat("std", "cal"), args.level)
      # JSON has no inf: q is None where the images are too few.
      row.update(conformal_scale=None if np.isinf(q) else q,
                 coverage_conformal=float(np.mean(mf.conformal_inside(
                     xt, mean, std, q))))
    rows.append(row)
    q_say = ("inf (too few images)" if row.get("conformal_scale") is None
             else f"{row['conformal_scale']:.2f}")
    conf = (f", conformal ({n_cal} images, q {q_say}) "
            f"{row['coverage_conformal']:.3f}" if n_cal else "")
    common.say(f"{task} {setting}: coverage {row['coverage']:.3f} (nominal "
               f"{args.level:g}){conf}, std-error correlation "
               f"{row['std_error_corr']:.3f}, PSNR MAP {row['psnr_map']:.2f}"
               f" / posterior mean {row['psnr_posterior_mean']:.2f} dB, "
               f"acceptance {row['acceptance_mean']:.2f}, ESS median "
               f"{row['ess_median']:.0f}" + (
                   f"; the Laplace approximation alone: coverage "
                   f"{row['coverage_laplace']:.3f}, std-error correlation "
                   f"{row['laplace_std_error_corr'] or float('nan'):.3f}"
                   if "coverage_laplace" in row else ""))
    k = min(6, len(test))
    yt = y[n_cal:n_cal + k]
    shown = figures.y_shown(op, yt, shape) if task == "cs" else jnp.clip(
        yt, 0, 1)
    top = max(float(std[:k].max()), float(err[:k].max()), 1e-6)
    cols = [xt[:k], np.asarray(shown), np.clip(cat("map", "test")[:k], 0, 1),
            np.clip(mean[:k], 0, 1), std[:k] / top, err[:k] / top]
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
  key = lambda r: tuple(r.get(k, LEGACY.get(k)) for k in RUN_KEYS)
  mine = [key(r) for r in rows]
  every = rows + [r for r in done if key(r) not in mine]
  mf.io.write_json_atomic(out / "summary.json", every)
  cols = list(dict.fromkeys(k for r in every for k in r))
  mf.io.write_csv_atomic(out / "summary.csv", every, cols)


if __name__ == "__main__":
  main()
