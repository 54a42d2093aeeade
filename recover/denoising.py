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
  common.add_method_args(p, experiments.DENOISING_METHODS)
  args = p.parse_args(argv)
  out = Path(args.out)
  scales = [float(s) for s in args.scales.split(",")]
  ctx = common.make_context(args, experiments.DENOISING_METHODS)
  csv_path = experiments.run_denoising(ctx, kind, scales)
  rows = experiments.summarize(csv_path)
  common.write_summary(out, rows)
  for exp in (kind, f"{kind}_ood"):
    part = [r for r in rows if r["experiment"] == exp]
    if part:
      common.plot_curves(out, part, "noise scale s", f"{exp}_psnr.png")
