"""SINUSOIDAL and RADIAL denoising (paper 5.4.2-5.4.3): y = x + delta."""

from __future__ import annotations

from pathlib import Path

from mapflow import experiments
from recover import common


def main(kind: str, argv=None):
  p = common.base_parser(f"python -m recover.{kind}", __doc__.splitlines()[0]
                         + f" Runs the {kind.upper()} experiment.")
  p.add_argument("--scales", default="0.1,0.2,0.4,0.8,1.6",
                 help="noise scales s (largest per-pixel std), comma-separated")
  p.add_argument("--methods", default=",".join(experiments.DENOISING_METHODS))
  p.add_argument("--bora-steps", type=int, default=300)
  p.add_argument("--bora-restarts", type=int, default=4)
  p.add_argument("--vae", default="fashion_mnist_vae")
  args = p.parse_args(argv)
  out = Path(args.out)
  methods = [m for m in args.methods.split(",") if m]
  prior, params = common.load_prior(args.prior)
  decode = None
  if "bora" in methods:
    import mapflow as mf
    decode, _ = mf.pretrained.load(args.vae)
  x_val, x_test, test_ids = common.protocol_images(args)
  scales = [float(s) for s in args.scales.split(",")]
  ctx = experiments.Context(
      out, prior=prior, params=params, x_val=x_val, x_test=x_test,
      test_ids=test_ids, decode=decode, steps=args.steps,
      bora_steps=args.bora_steps, bora_restarts=args.bora_restarts,
      methods=methods, seed=args.seed, progress=common.say)
  csv_path = experiments.run_denoising(ctx, kind, scales)
  rows = experiments.summarize(csv_path)
  common.write_summary(out, rows)
  common.plot_curves(out, rows, "noise scale s", f"{kind}_psnr.png")
