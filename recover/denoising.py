"""SINUSOIDAL and RADIAL denoising (paper 5.4.2-5.4.3): y = x + delta."""

from __future__ import annotations

from pathlib import Path

from recover import common
from recover.paper import cells, protocol, tables


def main(kind: str, argv=None):
  p = common.base_parser(f"python -m recover.{kind}", __doc__.splitlines()[0]
                         + f" Runs the {kind.upper()} experiment.")
  p.add_argument("--scales", default="0.1,0.2,0.4,0.8,1.6",
                 help="noise scales s (largest per-pixel std), comma-separated")
  common.add_method_args(p, protocol.PROTOCOLS[kind].methods)
  args = p.parse_args(argv)
  out = Path(args.out)
  scales = common.parse_floats("--scales", args.scales)
  with common.make_context(args, kind) as ctx:
    for task in cells.denoising_tasks(ctx, kind, scales):
      cells.run_cell(ctx, task)
    rows = tables.summarize(out / "results.csv")
    common.write_summary(out, rows)
  for exp in (kind, f"{kind}_ood"):
    part = [r for r in rows if r["experiment"] == exp]
    if part:
      common.plot_curves(out, part, "noise scale s", f"{exp}_psnr.png")
