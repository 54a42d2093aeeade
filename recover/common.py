"""Shared command-line plumbing for the experiment scripts."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
  from mapflow.experiments import RANDOM_INIT_STD, RANDOM_RESTARTS
  p = argparse.ArgumentParser(prog=prog, description=description)
  p.add_argument("--out", required=True, help="output folder (CSV, PNG)")
  p.add_argument("--prior", default="fashion_mnist_realnvp",
                 help="shipped prior name, or a checkpoint directory")
  p.add_argument("--steps", type=int, default=100,
                 help="optimiser steps per recovery (default 100: on the "
                 "validation images PSNR peaks near 100 Adam steps at "
                 "lr 0.03 and then falls slowly)")
  p.add_argument("--lr", type=float, default=0.03,
                 help="Adam learning rate of every method (default 0.03)")
  p.add_argument("--num-val", type=int, default=16,
                 help="validation images used to choose hyperparameters")
  p.add_argument("--num-test", type=int, default=64,
                 help="reported test images")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--data-dir", help="Fashion-MNIST IDX directory")
  p.add_argument("--no-ood", dest="ood", action="store_false",
                 help="skip the out-of-distribution images (digits, two "
                 "photographs, a cartoon; reported as EXPERIMENT_ood)")
  p.add_argument("--no-figures", dest="figures", action="store_false",
                 help="skip the per-setting PNG grids of recoveries")
  p.add_argument("--init-range", default="0.02,0.98", type=_init_range,
                 help="LO,HI pixel bounds of the measurement start of the "
                 "flow methods (default 0.02,0.98; RADIAL 0,1, chosen on "
                 "validation images)")
  p.add_argument("--inits", default="",
                 help="comma-separated starts of the flow methods to choose "
                 "among on the validation images, jointly with β/γ "
                 "(measurements, zeros; random, the image latent from "
                 "--restarts draws N(0, --init-std^2), each image keeping "
                 "its lowest-loss run; for ours only: isotropic, the "
                 "isotropic-noise MAP as the start, twice the steps in "
                 "all; noise_latent, moving the noise flow's latent from "
                 "0, digit noise only; for ours and the ablation: pixels, "
                 "moving the image itself from the measurements); any start "
                 "may carry its own Adam learning rate, NAME@LR (e.g. "
                 "pixels@0.003), chosen on validation with the rest; "
                 "default: the experiment's own "
                 "starts (measurements for denoising, zeros for 1-bit CS, "
                 "measurements and noise_latent for digit noise)")
  p.add_argument("--restarts", type=_positive(int), default=RANDOM_RESTARTS,
                 help="draws of the 'random' start (default "
                 f"{RANDOM_RESTARTS})")
  p.add_argument("--init-std", type=_positive(float),
                 default=RANDOM_INIT_STD,
                 help="latent std of the 'random' start's draws (default "
                 f"{RANDOM_INIT_STD:g})")
  return p


def _positive(kind):
  def parse(text):
    try:
      v = kind(text)
    except ValueError:
      v = None
    if v is None or not v > 0:
      raise argparse.ArgumentTypeError(
          f"got {text!r}, expected a positive {kind.__name__}")
    return v
  return parse


def _init_range(text):
  try:
    lo, hi = (float(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"got {text!r}, expected two numbers LO,HI") from None
  if not lo < hi:
    raise argparse.ArgumentTypeError(f"got {text!r}, expected LO < HI")
  return lo, hi


def add_method_args(p, methods):
  """The options every experiment shares: methods and the Bora baseline."""
  p.add_argument("--methods", default=",".join(methods),
                 help=f"comma-separated subset of {','.join(methods)}")
  p.add_argument("--bora-steps", type=int, default=300)
  p.add_argument("--bora-restarts", type=int, default=4)
  p.add_argument("--vae", default="fashion_mnist_vae",
                 help="Bora et al.'s generator (shipped VAE name)")


def make_context(args, valid_methods):
  """Loads the prior, the VAE (if Bora runs) and the protocol images."""
  import optax
  import mapflow as mf
  from mapflow import experiments
  from pathlib import Path
  methods = [m for m in args.methods.split(",") if m]
  prior, params = load_prior(args.prior)
  decode, decode_params = (mf.pretrained.load(args.vae) if "bora" in methods
                           else (None, None))
  x_val, x_test, test_ids = protocol_images(args)
  x_ood, ood_ids = None, ()
  if getattr(args, "ood", False):
    from mapflow import data
    x_ood, ood_ids = data.ood_images(x_test.shape[1])
    x_ood = x_ood.astype(np.float32) / 255.0
  return experiments.Context(
      Path(args.out), prior=prior, params=params, x_val=x_val, x_test=x_test,
      test_ids=test_ids, decode=decode, decode_params=decode_params,
      steps=args.steps,
      bora_steps=args.bora_steps, bora_restarts=args.bora_restarts,
      methods=methods, seed=args.seed, progress=say,
      optimizer=optax.adam(args.lr),
      valid_methods=valid_methods, x_ood=x_ood, ood_ids=ood_ids,
      figures=getattr(args, "figures", True), bar=True,
      init_range=getattr(args, "init_range", (0.02, 0.98)),
      inits=[v for v in getattr(args, "inits", "").split(",") if v] or None,
      restarts=getattr(args, "restarts", experiments.RANDOM_RESTARTS),
      init_std=getattr(args, "init_std", experiments.RANDOM_INIT_STD))


def load_prior(name_or_path):
  import mapflow as mf
  from pathlib import Path
  if Path(name_or_path).is_dir():
    params, cfg = mf.checkpoint.load(name_or_path)
    return mf.flows.from_config(cfg), params
  return mf.pretrained.load(name_or_path)


def protocol_images(args):
  """(x_val, x_test, test_ids) in [0, 1] from the Fashion-MNIST test split."""
  from mapflow import data, experiments
  x = data.load("fashion_mnist", "test", args.data_dir)
  val, test = experiments.protocol_indices(len(x))
  val, test = val[:args.num_val], test[:args.num_test]
  f = lambda i: x[i].astype(np.float32) / 255.0
  return f(val), f(test), test


def say(msg):
  print(msg, file=sys.stderr, flush=True)


def write_summary(out, rows):
  from mapflow.checkpoint import write_json_atomic
  write_json_atomic(out / "summary.json", rows)
  for r in rows:
    say(f"{r['experiment']:>10} {r['setting']:>6} {r['method']:>9}: "
        f"{r['psnr_mean']:6.2f} ± {r['psnr_stderr']:.2f} dB "
        f"(hyper {r['hyper']}, n={r['n']})")


def plot_curves(out, rows, xlabel, name, x_of=float):
  """PSNR against the setting, one line per method (needs matplotlib)."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    say("matplotlib not installed: skipping the figure")
    return None
  if len({r["setting"] for r in rows}) < 2:
    say(f"{name}: fewer than two settings so far, no curve to draw")
    return None
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for m in sorted({r["method"] for r in rows}):
    pts = sorted((x_of(r["setting"]), r["psnr_mean"], r["psnr_stderr"])
                 for r in rows if r["method"] == m)
    xs, ys, es = zip(*pts)
    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=2, label=m)
  ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("PSNR (dB)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = out / name
  tmp = out / f".{name}.tmp.png"
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  tmp.replace(path)
  return path
