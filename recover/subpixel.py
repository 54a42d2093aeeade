"""Sub-pixel imputation (paper 5.4.5): y = M * x, M ~ Bernoulli(keep).

python -m recover.subpixel --out DIR [--prior fashion_mnist_glow]

Drops a random quarter of the pixels (keep = 0.75) and fills them in with
the Glow prior (any shipped flow works).  Noiseless: the MAP's data term is
an iid Gaussian with a small --sigma.
"""

from __future__ import annotations

from pathlib import Path

from recover import common
from recover.paper import cells, protocol, tables


def main(argv=None):
  p = common.base_parser("python -m recover.subpixel", __doc__.splitlines()[0])
  p.set_defaults(prior="fashion_mnist_glow")
  p.add_argument("--keep", type=float, default=0.75)
  p.add_argument("--sigma", type=float, default=0.01,
                 help="std of the MAP's Gaussian data term")
  common.add_method_args(p, protocol.PROTOCOLS["subpixel"].methods)
  args = p.parse_args(argv)
  if not 0.0 < args.keep <= 1.0:
    p.error(f"--keep: got {args.keep}, expected a fraction in (0, 1]")
  if not args.sigma > 0.0:
    p.error(f"--sigma: got {args.sigma}, expected a positive std")
  with common.make_context(args, "subpixel") as ctx:
    cells.run_cell(ctx, cells.subpixel_task(ctx, args.keep, args.sigma))
    common.write_summary(Path(args.out),
                         tables.summarize(Path(args.out) / "results.csv"))


if __name__ == "__main__":
  main()
