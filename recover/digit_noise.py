"""Digit noise (paper 5.4.1): y = 0.5 x + a handwritten digit.

python -m recover.digit_noise --out DIR

The noise prior is a second flow trained on scikit-learn digits (28x28);
the digits added here come from its held-out split.  Ours chooses on the
validation images, with β, between moving the image latent from the
measurements and moving the digit flow's latent from 0 (``--inits``
measurements,noise_latent by default; both minimise the same objective).
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
  common.add_method_args(p, experiments.DENOISING_METHODS)
  args = p.parse_args(argv)
  out = Path(args.out)
  noise_prior, noise_params = common.load_prior(args.noise_prior)
  ctx = common.make_context(args, experiments.DENOISING_METHODS)
  x_val, x_test = ctx.x_val, ctx.x_test
  digits = data.load("digits", "test").astype(np.float32) / 255.0
  # Held-out digits: the first for validation, the next for the test images.
  rng = np.random.RandomState(args.seed)
  digits = digits[rng.permutation(len(digits))]
  d_val, d_test = digits[:len(x_val)], digits[len(x_val):len(x_val) +
                                              len(x_test)]
  csv_path = experiments.run_digit_noise(ctx, noise_prior, noise_params,
                                         d_val, d_test)
  common.write_summary(out, experiments.summarize(csv_path))


if __name__ == "__main__":
  main()
