"""Train Bora et al.'s VAE (784-500-500-20, softplus) on a dataset.

python -m train.vae --data fashion_mnist --workdir DIR [--steps 30000]
Resumable like train.flow.
"""

from __future__ import annotations

import argparse
import dataclasses

from mapflow import training, vae
from train.flow import (add_resume_anyway, check_workdir, flag_error,
                        load_data, training_errors)


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m train.vae",
                              description=__doc__.splitlines()[0])
  p.add_argument("--data", default="fashion_mnist")
  p.add_argument("--data-dir")
  p.add_argument("--workdir", required=True)
  p.add_argument("--steps", type=int, default=30000)
  p.add_argument("--batch-size", type=int, default=100)
  p.add_argument("--learning-rate", type=float, default=1e-3)
  p.add_argument("--seed", type=int, default=0)
  add_resume_anyway(p)
  p.add_argument("--no-progress", action="store_true")
  args = p.parse_args(argv)
  tc = dataclasses.replace(
      training.VAE_TRAINING, batch_size=args.batch_size,
      learning_rate=args.learning_rate, seed=args.seed,
      check_resume=not args.resume_anyway)
  try:
    training.check_run(tc, args.steps)
  except ValueError as e:
    raise flag_error(e) from None
  check_workdir(args.workdir)
  x_train, x_test = load_data(args.data, args.data_dir)
  if tc.batch_size > len(x_train):
    raise SystemExit(f"--batch-size: got {tc.batch_size}, more than the "
                     f"{len(x_train)} training images")
  cfg = vae.VAEConfig(image_shape=tuple(x_train.shape[1:]))
  from mapflow import checkpoint, io
  try:
    _, test_elbo = training.train_vae(
        cfg, x_train, x_test, args.workdir, args.steps, tc,
        not args.no_progress)
  except (checkpoint.CheckpointError, io.LockedError) as e:
    raise training_errors(e) from None
  print(f"test ELBO: {test_elbo:.2f} nats per image")


if __name__ == "__main__":
  main()
