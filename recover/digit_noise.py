"""Digit noise (paper 5.4.1): y = 0.5 x + a handwritten digit.

python -m recover.digit_noise --out DIR

The noise prior is a second flow trained on scikit-learn digits (28x28);
the digits added here come from its held-out split.  Ours may also move the
digit flow's latent (the ``noise_latent`` start): the same objective, with
the residual kept on the digit flow's support.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mapflow import data
from recover import common
from recover.paper import cells, protocol, tables


# Held-out digits from this index on are ours_heldout's noise-only
# examples, whatever --num-val and --num-test are (so its cached scores keep
# their meaning); the measurements use the ones before it.
NOISE_EXAMPLES_FROM = 80


def main(argv=None):
  p = common.base_parser("python -m recover.digit_noise",
                         __doc__.splitlines()[0])
  p.add_argument("--noise-prior", default="digits_realnvp",
                 help="shipped noise-prior name, or a checkpoint directory")
  common.add_method_args(p, protocol.PROTOCOLS["digits"].methods)
  args = p.parse_args(argv)
  out = Path(args.out)
  blind = "ours_heldout" in args.methods.split(",")
  if blind and args.num_val + args.num_test > NOISE_EXAMPLES_FROM:
    raise SystemExit(
        f"--num-test: got {args.num_test} with --num-val {args.num_val}, "
        f"expected them to add up to at most {NOISE_EXAMPLES_FROM}: "
        "ours_heldout's noise-only examples are the held-out digits after "
        "those (or leave ours_heldout out of --methods)")
  noise_prior, noise_params = common.load_prior(args.noise_prior,
                                                 "--noise-prior")
  with common.make_context(args, "digits") as ctx:
    n_val, n_test = len(ctx.images.x_val), len(ctx.images.x_test)
    digits = data.load("digits", "test").astype(np.float32) / 255.0
    # Held-out digits: the first for validation, the next for the test
    # images, and from NOISE_EXAMPLES_FROM on noise-only examples.
    rng = np.random.RandomState(args.seed)
    digits = digits[rng.permutation(len(digits))]
    task = cells.digit_noise_task(
        ctx, noise_prior, noise_params, digits[:n_val],
        digits[n_val:n_val + n_test],
        digits[NOISE_EXAMPLES_FROM:] if blind else None)
    cells.run_cell(ctx, task)
    common.write_summary(out, tables.summarize(out / "results.csv"))


if __name__ == "__main__":
  main()
