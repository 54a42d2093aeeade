"""Train a RealNVP or Glow prior: python -m train.flow --preset NAME --workdir DIR.

Resumable: run the same command again after a kill and it continues from the
last checkpoint in --workdir, with the same data order and random numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from mapflow import data, io, training
from mapflow.flows import PRESETS


# Config fields without a flag of their own: the log schedule's fields get
# theirs, and --resume-anyway sets check_resume.
_NOT_FLAGS = ("log", "check_resume")


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m train.flow",
                              description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="fashion_mnist_realnvp",
                 choices=sorted(training.TRAIN_PRESETS),
                 help="named run: flow preset, data and hyperparameters")
  p.add_argument("--flow", choices=sorted(PRESETS),
                 help="override the run's flow preset")
  p.add_argument("--data", help="override the dataset name "
                 "(fashion_mnist, mnist, digits, cifar10, celeb_a_hq, "
                 "folder:/path)")
  p.add_argument("--data-dir", help="IDX directory or tfds data_dir")
  p.add_argument("--workdir", required=True,
                 help="checkpoints, metrics and samples go here")
  p.add_argument("--steps", type=int, default=10000,
                 help="total steps of the run (default 10000)")
  p.add_argument("--time-budget", type=float, default=None,
                 help="stop after this many seconds, checkpointed")
  p.add_argument("--train-limit", type=int, default=0,
                 help="use only the first N training images (0: all)")
  for cls in (training.TrainConfig, training.LogSchedule):
    for f in dataclasses.fields(cls):
      if f.name not in _NOT_FLAGS:
        p.add_argument("--" + f.name.replace("_", "-"),
                       type=type(f.default), default=None,
                       help=f"override {cls.__name__}.{f.name}")
  add_resume_anyway(p)
  p.add_argument("--no-progress", action="store_true")
  return p.parse_args(argv)


def add_resume_anyway(p: argparse.ArgumentParser) -> None:
  """The ``--resume-anyway`` flag (``TrainConfig.check_resume``)."""
  p.add_argument("--resume-anyway", action="store_true",
                 help="resume a run in --workdir although its settings or "
                 "training images differ from those it began with (e.g. "
                 "images decoded a bit differently on another machine)")


def flag_error(error) -> SystemExit:
  """A library's "field: got ..." (an exception or its text) as the flag's
  error, without a traceback."""
  name, _, rest = str(error).partition(": ")
  return SystemExit(f"--{name.replace('_', '-')}: {rest}")


def check_workdir(path) -> None:
  """Refuses (naming --workdir) an empty path, which would write into the
  current folder, and one that is or lies under a file."""
  if not str(path).strip():
    raise SystemExit(f"--workdir: got {str(path)!r}, expected a folder")
  bad = io.file_in_the_way(path)
  if bad is not None:
    raise SystemExit(f"--workdir: got {str(path)!r}, but {str(bad)!r} is "
                     "a file")


def training_errors(e: Exception) -> SystemExit:
  """A checkpoint's or workdir lock's refusal as the command's error (a
  resume refusal also names ``--resume-anyway``)."""
  msg = str(e)
  if isinstance(e, training.ResumeError):
    msg += " (--resume-anyway carries on regardless)"
  return flag_error(msg) if msg.startswith("workdir: ") else SystemExit(msg)


def load_data(name, data_dir):
  """The train and test splits; a dataset unknown or missing here ends
  the command naming --data or --data-dir."""
  try:
    return (data.load(name, "train", data_dir),
            data.load(name, "test", data_dir))
  except (data.DatasetNotFoundError, ValueError) as e:
    msg = str(e)
    if msg.startswith("data_dir: "):
      raise SystemExit(f"--data-dir: {msg[len('data_dir: '):]}") from None
    if msg.startswith("name: "):
      msg = msg[len("name: "):]
    raise SystemExit(f"--data: {msg}") from None
  except OSError as e:  # a corrupt image, a torn .gz
    flag = "--data" if str(name).startswith("folder:") else "--data-dir"
    raise SystemExit(f"{flag}: {name}: a file could not be read "
                     f"({type(e).__name__}: {e})") from None


def main(argv=None):
  args = parse_args(argv)
  flow_cfg, data_name, tc = training.train_preset(args.preset)
  if args.flow:
    flow_cfg = PRESETS[args.flow]
  data_name = args.data or data_name
  given = lambda cls: {f.name: getattr(args, f.name)
                       for f in dataclasses.fields(cls)
                       if f.name not in _NOT_FLAGS
                       and getattr(args, f.name) is not None}
  tc = dataclasses.replace(
      tc, log=dataclasses.replace(tc.log, **given(training.LogSchedule)),
      check_resume=not args.resume_anyway, **given(training.TrainConfig))
  try:
    training.check_run(tc, args.steps, args.time_budget)
  except ValueError as e:
    raise flag_error(e) from None
  check_workdir(args.workdir)
  if args.train_limit < 0:
    raise SystemExit(f"--train-limit: got {args.train_limit}, expected an "
                     "int >= 0 (0: every training image)")
  x_train, x_test = load_data(data_name, args.data_dir)
  if args.train_limit:
    x_train = x_train[:args.train_limit]
  if tc.batch_size > len(x_train):
    raise SystemExit(f"--batch-size: got {tc.batch_size}, more than the "
                     f"{len(x_train)} training images" +
                     (" (--train-limit)" if args.train_limit else ""))
  shape = tuple(flow_cfg.image_shape)
  if tuple(x_train.shape[1:]) != shape:
    raise SystemExit(f"--flow/--data: {type(flow_cfg).__name__} for images "
                     f"of shape {shape}, but {data_name}'s are "
                     f"{tuple(x_train.shape[1:])}")
  print(f"training {type(flow_cfg).__name__} on {data_name}: "
        f"{len(x_train)} train / {len(x_test)} test images -> {args.workdir}",
        file=sys.stderr)
  from mapflow import checkpoint
  try:
    training.train(flow_cfg, tc, x_train, x_test, args.workdir, args.steps,
                   args.time_budget, progress=not args.no_progress,
                   on_eval=lambda r: print(
                       f"step {r['step']}: test bits/dim "
                       f"{r['test_bpd']:.4f}", file=sys.stderr))
  except (checkpoint.CheckpointError, io.LockedError) as e:
    # Another run's workdir, a damaged checkpoint, or one in use.
    raise training_errors(e) from None


if __name__ == "__main__":
  main()
