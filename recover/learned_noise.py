"""Denoise with a noise model learned from your own noise.

python -m recover.learned_noise --noise NOISE --measurements Y --out DIR
    [--operator identity|scale:C] [--prior NAME|DIR] [--truth X]

1. Trains a RealNVP on noise-only examples (``--noise``: a folder of
   images, an IDX file, or an .npz of uint8 or [0, 1] floats) in
   DIR/noise_flow.  Resumable: run the command again and it continues, or
   skips the training once it reached ``--noise-steps``.
2. Recovers each image from ``y = f(x) + δ`` by MAP with the signal prior
   and the learned noise flow as p_Δ (the paper's digit-noise idea applied
   to your data).  With an invertible ``f`` it moves the noise flow's
   latent (``--start noise_latent``, the default), which keeps the residual
   on the learned noise's support.

Writes DIR/recovered.npz (``x``: the recoveries), DIR/recovered.png
(measurement | recovery [| truth]) and, with ``--truth``, DIR/psnr.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np


def _operator(text):
  import mapflow as mf
  if text == "identity":
    return mf.operators.identity()
  kind, _, c = text.partition(":")
  if kind == "scale":
    try:
      with np.errstate(over="ignore"):  # an overflow is refused below
        c = float(np.float32(c))  # the operator computes in float32
    except (ValueError, OverflowError):
      c = 0.0
    if c != 0.0 and np.isfinite(c):
      return mf.operators.scale(c)
  raise argparse.ArgumentTypeError(
      f"got {text!r}, expected identity or scale:C with C a nonzero number "
      "that float32 holds")


def _measurements(path):
  """Measurements as float32 (N, H, W, C): an .npz array ``y`` (or its only
  array), any range; or images (a folder, an IDX file) scaled to [0, 1]."""
  from mapflow import data
  path = Path(path)
  try:
    if path.suffix == ".npz":
      y = data.load_npz_array(path, "y").astype(np.float32)
      y = y[..., None] if y.ndim == 3 else y
    else:
      y = data.load_examples(path).astype(np.float32) / 255.0
  except (data.DatasetNotFoundError, ValueError, OSError) as e:
    raise SystemExit(f"--measurements: {e}") from None
  # Before the noise flow trains, not after.
  if len(y) == 0:
    raise SystemExit(f"--measurements: {path} holds no examples, expected "
                     "at least one")
  bad = int(np.sum(~np.isfinite(y)))
  if bad:
    raise SystemExit(f"--measurements: {path} holds {bad} non-finite "
                     "values, expected finite measurements")
  return y


def _examples(path, flag: str):
  """``data.load_examples(path)``, or the command's error naming ``flag``."""
  from mapflow import data
  try:
    return data.load_examples(path)
  except (data.DatasetNotFoundError, ValueError, OSError) as e:
    raise SystemExit(f"{flag}: {e}") from None


def parse_args(argv=None):
  from recover.common import DEFAULT_PRIOR, _at_least_zero, _positive
  p = argparse.ArgumentParser(prog="python -m recover.learned_noise",
                              description=__doc__.splitlines()[0])
  p.add_argument("--noise", required=True,
                 help="noise-only examples: folder, IDX file or .npz")
  p.add_argument("--measurements", required=True,
                 help="y to recover: .npz (array 'y'), folder or IDX file")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--operator", type=_operator, default=_operator("identity"),
                 help="f: identity (default) or scale:C")
  p.add_argument("--prior", default=DEFAULT_PRIOR,
                 help=f"signal prior: shipped name or checkpoint directory "
                 f"(default {DEFAULT_PRIOR})")
  p.add_argument("--truth", help="the true images (same formats), for PSNR")
  from mapflow.flows import PRESETS
  p.add_argument("--noise-preset", default="realnvp_fmnist_cpu",
                 choices=sorted(PRESETS),
                 help="the noise flow's architecture (a flow preset; its "
                 "image shape becomes the noise's)")
  p.add_argument("--noise-steps", type=_positive(int), default=2000,
                 help="training steps of the noise flow")
  p.add_argument("--noise-batch", type=_positive(int), default=64)
  p.add_argument("--beta", type=_at_least_zero(float), default=1.0,
                 help="β, the prior's weight (1: the posterior's mode)")
  p.add_argument("--steps", type=_positive(int), default=300, help="Adam steps")
  from mapflow.solve import DEFAULT_LEARNING_RATE
  p.add_argument("--lr", type=_positive(float), default=DEFAULT_LEARNING_RATE,
                 help=f"Adam learning rate (default {DEFAULT_LEARNING_RATE:g})")
  p.add_argument("--start", default="noise_latent",
                 choices=("noise_latent", "measurements", "zeros"),
                 help="what moves and where from (noise_latent needs an "
                 "invertible operator)")
  p.add_argument("--no-progress", action="store_true")
  return p.parse_args(argv)


def train_noise_flow(noise_u8, workdir, preset_name, steps, batch,
                     progress=True):
  """Trains (or resumes) a flow on uint8 noise examples; returns
  ``(flow, params)``."""
  import mapflow as mf
  from mapflow import training
  if len(noise_u8) < 4:
    raise SystemExit(f"--noise: got {len(noise_u8)} examples, expected at "
                     "least 4 (a tenth is held out to score the flow)")
  cfg = dataclasses.replace(mf.flows.preset(preset_name),
                            image_shape=tuple(noise_u8.shape[1:]))
  n_test = max(1, len(noise_u8) // 10)
  x_test, x_train = noise_u8[:n_test], noise_u8[n_test:]
  batch = min(batch, len(x_train))
  tc = training.TrainConfig(
      batch_size=batch, learning_rate=1e-3, halve_every=max(1, steps // 2),
      log=training.LogSchedule(eval_every=0, sample_every=0,
                               checkpoint_every=100, log_every=20,
                               eval_batch=min(500, n_test)))
  state = training.train(cfg, tc, x_train, x_test, workdir, steps,
                         progress=progress)
  return mf.flows.from_config(cfg), state.params


def _as_flags(noise_steps: int) -> dict:
  """A resume refusal's training settings as this command's flags (its
  learning rate halves at half of --noise-steps)."""
  return {"halve_every": lambda then, now: (
              f"--noise-steps {2 * then} or {2 * then + 1} (now "
              f"{noise_steps})"),
          "batch_size": lambda then, now: f"--noise-batch {then} (now {now})"}


def main(argv=None):
  args = parse_args(argv)
  import jax
  import jax.numpy as jnp
  import optax
  import mapflow as mf
  from mapflow import data
  from recover.common import cli_error, load_prior, say
  out = Path(args.out)
  for name in ("noise_steps", "noise_batch", "steps"):
    if getattr(args, name) < 1:
      raise SystemExit(f"--{name.replace('_', '-')}: got "
                       f"{getattr(args, name)}, expected >= 1")
  from recover.common import check_out_folder
  check_out_folder(args.out)
  noise_u8 = _examples(args.noise, "--noise")
  y = _measurements(args.measurements)
  truth = (_examples(args.truth, "--truth").astype(np.float32) / 255.0
           if args.truth else None)
  prior, params = load_prior(args.prior)
  if tuple(noise_u8.shape[1:]) != tuple(y.shape[1:]):
    raise SystemExit(f"--noise: examples of shape {noise_u8.shape[1:]}, but "
                     f"--measurements of shape {y.shape[1:]}; expected the "
                     "same (the noise is added to the measurement)")
  # Before the noise flow trains: measurements the prior and the operator
  # cannot explain end the command now, not after training.
  image_shape = tuple(prior.config.image_shape)
  try:
    want = args.operator.output_event_shape(image_shape)
  except (TypeError, ValueError) as e:
    raise SystemExit(f"--operator: cannot be applied to the prior's images "
                     f"of shape {image_shape} ({e})") from None
  if tuple(y.shape[1:]) != tuple(want):
    raise SystemExit(f"--measurements: got shape {tuple(y.shape[1:])}, "
                     f"expected {tuple(want)} (--operator on --prior's "
                     f"images of shape {image_shape})")
  if truth is not None and tuple(truth.shape) != (len(y),) + image_shape:
    raise SystemExit(f"--truth: got images of shape {truth.shape}, "
                     f"expected {(len(y),) + image_shape}")
  say(f"training the noise flow on {len(noise_u8)} examples of shape "
      f"{noise_u8.shape[1:]} -> {out / 'noise_flow'}")
  from mapflow import checkpoint, io as io_lib
  try:
    flow, noise_params = train_noise_flow(
        noise_u8, out / "noise_flow", args.noise_preset, args.noise_steps,
        args.noise_batch, progress=not args.no_progress)
  except (checkpoint.CheckpointError, io_lib.LockedError) as e:
    # A noise flow of another preset or shape already in --out, a damaged
    # one, or a run in progress there.
    from mapflow import training
    msg = (e.message("--out", _as_flags(args.noise_steps))
           if isinstance(e, training.ResumeError)
           else str(e).replace("--workdir", "--out"))
    raise cli_error("--out", msg) from None
  noise = mf.noise.from_flow(flow, noise_params)
  starts = {"noise_latent": mf.SolverConfig(init="zeros",
                                            parametrization="noise"),
            "measurements": mf.SolverConfig(init="measurements"),
            "zeros": mf.SolverConfig(init="zeros")}
  bar = None
  if not args.no_progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=args.steps, desc="recover", unit="step")
  cfg = starts[args.start]._replace(
      progress=None if bar is None else lambda i, _: bar.update(1))
  res = mf.recover(jnp.asarray(y), prior=prior, params=params,
                   operator=args.operator, noise=noise, beta=args.beta,
                   steps=args.steps, optimizer=optax.adam(args.lr),
                   config=cfg)
  if bar is not None:
    bar.close()
  x = np.asarray(res.x)
  mf.io.write_npz_atomic(out / "recovered.npz", x=x,
                         loss=np.asarray(res.loss))
  cols = [np.clip(np.asarray(args.operator.back_project(jnp.asarray(y))),
                  0, 1), np.clip(x, 0, 1)]
  titles = ["measurement", "recovered"]
  if truth is not None:
    psnr = np.asarray(mf.metrics.psnr(truth, x))
    base = np.asarray(mf.metrics.psnr(truth, cols[0]))
    mf.io.write_json_atomic(out / "psnr.json", {
        "psnr_mean": float(psnr.mean()), "per_image": psnr.tolist(),
        "measurement_psnr_mean": float(base.mean())})
    say(f"PSNR {psnr.mean():.2f} dB (the measurement's back-projection: "
        f"{base.mean():.2f} dB)")
    cols.append(truth)
    titles.append("truth")
  k = min(len(x), 8)
  grid = np.stack([c[:k] for c in cols], axis=1)
  mf.viz.save_labelled_grid(out / "recovered.png",
                            grid.reshape((-1,) + grid.shape[2:]),
                            ncols=len(cols), col_labels=titles, scale=3)
  say(f"wrote {out / 'recovered.npz'} and {out / 'recovered.png'}")
  return res


if __name__ == "__main__":
  main()
