"""Shared command-line plumbing for the experiment scripts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# The Fashion-MNIST prior every experiment but sub-pixel uses by default.
DEFAULT_PRIOR = "fashion_mnist_realnvp_10k"


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
  from recover.paper.methods import RANDOM_INIT_STD, RANDOM_RESTARTS
  p = argparse.ArgumentParser(prog=prog, description=description)
  p.add_argument("--out", required=True, help="output folder (CSV, PNG)")
  p.add_argument("--prior", default=DEFAULT_PRIOR,
                 help="shipped prior name, or a checkpoint directory "
                 f"(default {DEFAULT_PRIOR})")
  p.add_argument("--num-val", type=_positive(int), default=16,
                 help="validation images used to choose hyperparameters")
  p.add_argument("--num-test", type=_positive(int), default=64,
                 help="reported test images")
  p.add_argument("--seed", type=SEED, default=0)
  p.add_argument("--data-dir", help="Fashion-MNIST IDX directory")
  p.add_argument("--no-ood", dest="ood", action="store_false",
                 help="skip the out-of-distribution images (digits, two "
                 "photographs, a cartoon; reported as EXPERIMENT_ood)")
  p.add_argument("--no-figures", dest="figures", action="store_false",
                 help="skip the per-setting PNG grids of recoveries")
  p.add_argument("--inits", default="",
                 help="comma-separated starts offered to every flow method "
                 "that can take them, chosen on the validation images with "
                 "β/γ; each is KIND[@LR][:STEPS] (Adam learning rate, "
                 "default 0.03; steps, default 100).  KIND: zeros, "
                 "measurements, random (--restarts draws at --init-std, "
                 "each image keeping its lowest-loss run), pixels (the "
                 "image itself; not Bora), noise_latent (the noise flow's "
                 "latent; ours, digit noise), isotropic (the ablation's "
                 "MAP then ours: twice the steps, so every flow method "
                 "must be offered that budget too).  Default: the "
                 "experiment's protocol (python -m recover.report prints "
                 "the table)")
  p.add_argument("--restarts", type=_positive(int), default=RANDOM_RESTARTS,
                 help="draws of the 'random' start (default "
                 f"{RANDOM_RESTARTS})")
  p.add_argument("--init-std", type=_positive(float),
                 default=RANDOM_INIT_STD,
                 help="latent std of the 'random' start's draws (default "
                 f"{RANDOM_INIT_STD:g})")
  return p


def _checked(kind, ok, expected: str):
  """An argparse type: ``kind(text)`` where ``ok`` holds, else an error
  saying what was expected."""
  def parse(text):
    try:
      v = kind(text)
    except ValueError:
      v = None
    if v is None or not ok(v):
      raise argparse.ArgumentTypeError(f"got {text!r}, expected {expected}")
    return v
  return parse


def _finite(v) -> bool:
  # np.isfinite overflows on ints beyond int64; an int is finite anyway.
  return isinstance(v, int) or bool(np.isfinite(v))


def _positive(kind):
  return _checked(kind, lambda v: v > 0 and _finite(v),
                  f"a positive {kind.__name__}")


def _at_least_zero(kind):
  article = "an" if kind is int else "a"
  return _checked(kind, lambda v: v >= 0 and _finite(v),
                  f"{article} {kind.__name__} >= 0")


# A PRNG seed: jax.random.PRNGKey keeps 32 bits, so larger seeds would
# repeat smaller ones' draws.
SEED = _checked(int, lambda v: 0 <= v < 2 ** 32, "an int in [0, 2**32)")

# A number strictly between 0 and 1 (a rate or a share).
_share = _checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")


def parse_floats(name: str, text: str, integer: bool = False,
                 allow_empty: bool = False):
  """A comma-separated list of positive numbers (``--scales``, ``--ms``);
  exits with a message naming the option otherwise (an empty list too,
  unless ``allow_empty``)."""
  out = []
  for part in (v.strip() for v in text.split(",")):
    if not part:
      continue
    try:
      v = float(part)
    except ValueError:
      v = float("nan")
    if not (v > 0 and np.isfinite(v)) or (integer and v != int(v)):
      what = "positive integers" if integer else "positive numbers"
      raise SystemExit(f"{name}: got {part!r} in {text!r}, expected "
                       f"comma-separated {what}")
    out.append(v)
  if not out and not allow_empty:
    what = "positive integers" if integer else "positive numbers"
    raise SystemExit(f"{name}: got {text!r}, expected at least one of "
                     f"comma-separated {what}")
  return out


def check_out_folder(path, flag: str = "--out") -> Path:
  """``path`` as a folder to write into: refused (naming ``flag``) when it
  is empty (an unset shell variable would write into the current folder)
  or names an existing file."""
  from mapflow.io import file_in_the_way
  if not str(path).strip():
    raise SystemExit(f"{flag}: got {str(path)!r}, expected a folder")
  out = Path(path)
  bad = file_in_the_way(out)
  if bad == out:
    raise SystemExit(f"{flag}: got {str(path)!r}, which is a file, expected "
                     "a folder")
  if bad is not None:
    raise SystemExit(f"{flag}: got {str(path)!r}, under {str(bad)!r}, "
                     "which is a file")
  return out


class _CliContext:
  """An experiment's ``cells.Context`` whose refusals on opening (a
  folder made with other settings, one in use by another run, one that
  cannot be made) end the command with their message, not a traceback."""

  def __init__(self, ctx):
    self.ctx = ctx

  def __enter__(self):
    from mapflow import io as io_lib
    from recover.paper import cells
    try:
      return self.ctx.__enter__()
    except (cells.SettingError, io_lib.LockedError) as e:
      raise SystemExit(str(e)) from None
    except OSError as e:
      raise SystemExit(f"--out: {e}") from None

  def __exit__(self, *exc):
    return self.ctx.__exit__(*exc)


def add_method_args(p, methods):
  """The methods an experiment may run, and Bora et al.'s generator."""
  p.add_argument("--methods", default=",".join(methods),
                 help=f"comma-separated subset of {','.join(methods)}")
  p.add_argument("--vae", default="fashion_mnist_vae",
                 help="Bora et al.'s generator (shipped VAE name)")
  from recover.paper.methods import BORA
  p.add_argument("--bora-steps", type=_positive(int), default=BORA.steps,
                 help=f"Bora et al.'s Adam steps (default {BORA.steps}, its "
                 "protocol; smaller only for quick trials)")
  p.add_argument("--bora-restarts", type=_positive(int),
                 default=BORA.restarts,
                 help=f"Bora et al.'s random restarts (default "
                 f"{BORA.restarts})")


def make_context(args, experiment: str):
  """The experiment's ``Context`` (use it as ``with ...:``): loads the
  prior, the VAE (if Bora runs) and the protocol images."""
  import mapflow as mf
  from pathlib import Path
  from recover.paper import cells, methods as methods_lib, protocol
  check_out_folder(args.out)
  valid = protocol.PROTOCOLS[experiment].methods
  chosen = tuple(m for m in args.methods.split(",") if m)
  unknown = sorted(set(chosen) - set(valid))
  if unknown or not chosen:
    raise SystemExit(f"--methods: got {args.methods!r}, expected a "
                     f"comma-separated subset of {','.join(valid)}")
  try:
    starts = (methods_lib.parse_starts(args.inits) if args.inits.strip()
              else None)
    if starts is not None:
      methods_lib.check_fair(chosen, starts)
  except ValueError as e:
    raise SystemExit(f"--{e}") from None
  prior, params = load_prior(args.prior)
  decode, decode_params = (load_prior(args.vae, "--vae", "vae")
                           if "bora" in chosen else (None, None))
  x_val, x_test, val_ids, test_ids = protocol_images(args)
  # Before any folder is written: the experiments' images are these.
  for flag, model in (("--prior", prior), ("--vae", decode)):
    shape = getattr(getattr(model, "config", None), "image_shape", None)
    if shape is not None and tuple(shape) != tuple(x_test.shape[1:]):
      raise SystemExit(f"{flag}: got a model for images of shape "
                       f"{tuple(shape)}, expected {tuple(x_test.shape[1:])} "
                       "(the experiments' Fashion-MNIST images)")
  x_ood, ood_ids = None, ()
  if getattr(args, "ood", False):
    from mapflow import data
    x_ood, ood_ids = data.ood_images(x_test.shape[1])
    x_ood = x_ood.astype(np.float32) / 255.0
  return _CliContext(cells.Context(
      Path(args.out), cells.Models(prior, params, decode, decode_params),
      cells.Images(x_val, x_test, tuple(int(i) for i in val_ids),
                   tuple(int(i) for i in test_ids), x_ood, tuple(ood_ids)),
      cells.Options(chosen, starts, args.seed, args.restarts, args.init_std,
                    getattr(args, "figures", True), True, say,
                    methods_lib.BORA._replace(steps=args.bora_steps,
                                              restarts=args.bora_restarts)),
      run_info=run_info(args, prior, experiment)))


# Denoising scores ours_heldout by recorrupted measurements alone, which the
# 2026-12-07 change (held-out errors over measured entries only) did not
# touch: its folders keep the string they were made with, and rerun.
_DENOISING_EXPERIMENTS = ("sinusoidal", "radial")


def run_info(args, prior, experiment: str = "") -> dict:
  """What a results folder records about the run that made it."""
  from recover.paper.methods import BASE_LR, BASE_STEPS
  info = {"prior": args.prior, "prior_config": type(prior.config).__name__,
          "seed": args.seed, "num_val": args.num_val,
          "restarts": args.restarts, "init_std": args.init_std,
          # A start label leaves these out (``Start.label``): cached scores
          # mean what their labels say only while they stay the same.
          "start_lr": BASE_LR, "start_steps": BASE_STEPS}
  if getattr(args, "noise_prior", None):
    info["noise_prior"] = args.noise_prior
  # matrix_rows: the matrix (and noise draw) every 1-bit setting shares;
  # a folder's cells made with two of them would mix two designs.
  for k in ("keep", "sigma", "m", "scale", "matrix_rows"):
    if hasattr(args, k):
      info[k] = getattr(args, k)
  if "ours_heldout" in args.methods.split(","):
    # What its validation scores mean (``cells.blind_score_kind``).
    # "measured entries": since 2026-12-07 1-bit CS rows past m no longer
    # count (``holdout.heldout_error``'s mask).
    info["blind_selection"] = (
        "recorrupted alpha 0.5, else held-out 20% (dB)"
        if experiment in _DENOISING_EXPERIMENTS else
        "recorrupted alpha 0.5, else held-out 20% of the measured entries "
        "(dB)")
    if getattr(args, "noise_prior", None):
      info["blind_selection"] = "residual typicality (dB)"
  if "bora" in args.methods.split(","):
    info.update(vae=args.vae, bora_steps=args.bora_steps,
                bora_restarts=args.bora_restarts)
  # Not a setting: which machines added to the folder (XLA:CPU results
  # differ in the last bits across CPU kinds, which 100-200 Adam steps can
  # carry to ~0.3 dB on an image).
  info["hosts"] = [host_description()]
  if not Path(args.prior).is_dir():
    import mapflow as mf
    meta = mf.pretrained.info(args.prior)
    info["prior_step"] = meta.get("step")
    info["prior_test_bpd"] = meta.get("eval", {}).get("test_bpd")
  return info


def host_description() -> str:
  """The machine kind results come from: CPU model, its widest vector
  extension, core count, and jax's version and device; on CPU, ", XLA
  convolutions" where the steps run them on XLA's own kernels
  (``mapflow.xla.step_options``; runs before 2026-12-07 used jaxlib's
  YNNPACK ones)."""
  import os
  import platform
  import jax
  model, flags = platform.processor() or platform.machine(), set()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      key, _, value = line.partition(":")
      if key.strip() == "model name":
        model = value.strip()
      elif key.strip() == "flags":
        flags = set(value.split())
      if flags and model:
        break
  except OSError:
    pass
  vec = next((f for f in ("avx512f", "avx2", "avx") if f in flags), "")
  dev = jax.devices()[0]
  kind = dev.platform if dev.platform == "cpu" else dev.device_kind
  from mapflow import xla
  convs = ", XLA convolutions" if xla.step_options() else ""
  return (f"{model}{' ' + vec if vec else ''}, {os.cpu_count()} cores; "
          f"jax {jax.__version__} on {kind}{convs}")


def cli_error(flag: str, error: Exception) -> SystemExit:
  """``error`` (a library's "arg: got ..., expected ...") as the command
  line's own error for ``flag``, without a traceback."""
  msg = str(error)
  head, sep, rest = msg.partition(": ")
  if sep and head.isidentifier():
    msg = rest
  return SystemExit(f"{flag}: {msg}")


def load_prior(name_or_path, flag: str = "--prior", kind: str = "flow"):
  """A shipped model by name, or a checkpoint directory: ``(prior,
  params)`` for a flow (``kind`` "flow"), ``(decode, params)`` for a VAE
  ("vae").  A bad one ends the command with an error naming ``flag``."""
  import mapflow as mf
  from pathlib import Path
  try:
    if Path(name_or_path).is_dir():
      params, cfg = mf.checkpoint.load(name_or_path)
      is_vae = isinstance(cfg, mf.vae.VAEConfig)
      model = mf.vae.decoder(cfg) if is_vae else mf.flows.from_config(cfg)
    elif name_or_path in mf.pretrained.available():
      model, params = mf.pretrained.load(name_or_path)
      is_vae = not hasattr(model, "inverse")
    else:
      raise SystemExit(
          f"{flag}: got {name_or_path!r}, expected a shipped model (one of "
          f"{', '.join(mf.pretrained.available())}) or a checkpoint "
          "directory")
  except (ValueError, OSError) as e:
    raise cli_error(flag, e) from None
  if is_vae != (kind == "vae"):
    raise SystemExit(f"{flag}: got {name_or_path!r}, a "
                     f"{'VAE' if is_vae else 'flow'}; expected a "
                     f"{'VAE' if kind == 'vae' else 'flow'}")
  return model, params


def protocol_images(args):
  """(x_val, x_test, val_ids, test_ids), images in [0, 1] from the
  Fashion-MNIST test split."""
  from mapflow import data
  from recover.paper.protocol import protocol_indices
  try:
    x = data.load("fashion_mnist", "test", args.data_dir)
  except (data.DatasetNotFoundError, ValueError) as e:  # ValueError: not IDX
    raise cli_error("--data-dir", e) from None
  except OSError as e:  # a torn .gz
    raise SystemExit(f"--data-dir: a file could not be read "
                     f"({type(e).__name__}: {e})") from None
  val, test = protocol_indices(len(x))
  if args.num_val > len(val) or args.num_test > len(test):
    raise SystemExit(f"--num-val/--num-test: got {args.num_val}/"
                     f"{args.num_test}, expected at most {len(val)}/"
                     f"{len(test)}")
  val, test = val[:args.num_val], test[:args.num_test]
  f = lambda i: x[i].astype(np.float32) / 255.0
  return f(val), f(test), val, test


def say(msg):
  print(msg, file=sys.stderr, flush=True)


def write_summary(out, rows):
  from mapflow.io import write_json_atomic
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
  # Ticks at the settings themselves, plainly written: a log axis's own
  # minor labels ("3x10^-1") overlap where settings are a factor 2 apart.
  settings = sorted({x_of(r["setting"]) for r in rows})
  ax.set_xticks(settings, [f"{v:g}" for v in settings])
  ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
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
