"""Sub-pixel imputation (paper 5.4.5): y = M * x, M ~ Bernoulli(keep).

python -m recover.subpixel --out DIR [--prior fashion_mnist_glow]

Drops a random quarter of the pixels (keep = 0.75) and fills them in with
the Glow prior (any shipped flow works).  Noiseless: the MAP's data term is
an iid Gaussian with a small --sigma.
"""

from __future__ import annotations

from pathlib import Path

from mapflow import experiments
from recover import common


def main(argv=None):
  p = common.base_parser("python -m recover.subpixel", __doc__.splitlines()[0])
  p.set_defaults(prior="fashion_mnist_glow")
  p.add_argument("--keep", type=float, default=0.75)
  p.add_argument("--sigma", type=float, default=0.01,
                 help="std of the MAP's Gaussian data term")
  common.add_method_args(p, experiments.SUBPIXEL_METHODS)
  args = p.parse_args(argv)
  ctx = common.make_context(args, experiments.SUBPIXEL_METHODS)
  csv_path = experiments.run_subpixel(ctx, args.keep, args.sigma)
  common.write_summary(Path(args.out), experiments.summarize(csv_path))


if __name__ == "__main__":
  main()
