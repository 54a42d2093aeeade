"""Digit noise (paper 5.4.1): y = 0.5 x + a handwritten digit.

python -m recover.digit_noise --out DIR

The noise prior is a second flow trained on scikit-learn digits (28x28);
the digits added here come from its held-out split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mapflow import data, experiments
from recover import common


def main(argv=None):
  p = common.base_parser("python -m recover.digit_noise",
                         __doc__.splitlines()[0])
  p.add_argument("--noise-prior", default="digits_realnvp",
                 help="shipped noise-prior name, or a checkpoint directory")
  p.add_argument("--methods",
                 default=",".join(experiments.DENOISING_METHODS))
  p.add_argument("--bora-steps", type=int, default=300)
  p.add_argument("--bora-restarts", type=int, default=4)
  p.add_argument("--vae", default="fashion_mnist_vae")
  args = p.parse_args(argv)
  out = Path(args.out)
  methods = [m for m in args.methods.split(",") if m]
  prior, params = common.load_prior(args.prior)
  noise_prior, noise_params = common.load_prior(args.noise_prior)
  decode = None
  if "bora" in methods:
    import mapflow as mf
    decode, _ = mf.pretrained.load(args.vae)
  x_val, x_test, test_ids = common.protocol_images(args)
  digits = data.load("digits", "test").astype(np.float32) / 255.0
  # Held-out digits: the first for validation, the next for the test images.
  rng = np.random.RandomState(args.seed)
  digits = digits[rng.permutation(len(digits))]
  d_val, d_test = digits[:len(x_val)], digits[len(x_val):len(x_val) +
                                              len(x_test)]
  ctx = experiments.Context(
      out, prior=prior, params=params, x_val=x_val, x_test=x_test,
      test_ids=test_ids, decode=decode, steps=args.steps,
      bora_steps=args.bora_steps, bora_restarts=args.bora_restarts,
      methods=methods, seed=args.seed, progress=common.say)
  csv_path = experiments.run_digit_noise(ctx, noise_prior, noise_params,
                                         d_val, d_test)
  common.write_summary(out, experiments.summarize(csv_path))


if __name__ == "__main__":
  main()
