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
  p.add_argument("--methods", default=",".join(experiments.SUBPIXEL_METHODS))
  p.add_argument("--bora-steps", type=int, default=300)
  p.add_argument("--bora-restarts", type=int, default=4)
  p.add_argument("--vae", default="fashion_mnist_vae")
  args = p.parse_args(argv)
  methods = [m for m in args.methods.split(",") if m]
  prior, params = common.load_prior(args.prior)
  decode = None
  if "bora" in methods:
    import mapflow as mf
    decode, _ = mf.pretrained.load(args.vae)
  x_val, x_test, test_ids = common.protocol_images(args)
  ctx = experiments.Context(
      Path(args.out), prior=prior, params=params, x_val=x_val, x_test=x_test,
      test_ids=test_ids, decode=decode, steps=args.steps,
      bora_steps=args.bora_steps, bora_restarts=args.bora_restarts,
      methods=methods, seed=args.seed, progress=common.say,
      valid_methods=experiments.SUBPIXEL_METHODS)
  csv_path = experiments.run_subpixel(ctx, args.keep, args.sigma)
  common.write_summary(Path(args.out), experiments.summarize(csv_path))


if __name__ == "__main__":
  main()
