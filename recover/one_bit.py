"""Noisy 1-bit compressed sensing (paper 5.4.4): y = sign(A (x - 0.5)) + delta.

python -m recover.one_bit --out DIR [--ms ...] [--scales ...]

PSNR against m at a fixed noise scale (like Figure 4) and against the noise
scale at a fixed m (like Figure 10b).  The noise is SINUSOIDAL-1D with a
positive mean (0.5 s); the image is centred at 0.5 before the sign.
"""

from __future__ import annotations

from pathlib import Path

from recover import common
from recover.paper import cells, protocol, tables


def _parse(setting):
  return dict((k, float(v)) for k, v in (p.split("=")
                                         for p in setting.split(",")))


def main(argv=None):
  p = common.base_parser("python -m recover.one_bit", __doc__.splitlines()[0])
  p.add_argument("--ms", default="100,200,400,800,1600,3200",
                 help="measurement counts for the PSNR-vs-m curve ('' for "
                 "none)")
  p.add_argument("--scale", type=common._positive(float), default=1.0,
                 help="noise scale s of the PSNR-vs-m curve")
  p.add_argument("--scales", default="0.25,0.5,1,2,4",
                 help="noise scales for the PSNR-vs-s curve ('' for none)")
  p.add_argument("--m", type=common._positive(int), default=800,
                 help="measurements of the PSNR-vs-s curve")
  p.add_argument("--matrix-rows", type=common._positive(int), default=None,
                 help="rows of the one Gaussian matrix (and noise draw) "
                 "every setting takes its first m rows from (default: the "
                 "largest m); a run split over folders (then merged with "
                 "python -m recover.merge) passes the whole run's")
  common.add_method_args(p, protocol.PROTOCOLS["one_bit"].methods)
  args = p.parse_args(argv)
  out = Path(args.out)
  ms = [int(v) for v in common.parse_floats("--ms", args.ms, integer=True,
                                            allow_empty=True)]
  scales = common.parse_floats("--scales", args.scales, allow_empty=True)
  settings = [(m, args.scale) for m in ms] + [
      (args.m, s) for s in scales if (args.m, s) not in
      [(m, args.scale) for m in ms]]
  if not settings:
    p.error("--ms and --scales: got none, expected at least one setting")
  largest = max(m for m, _ in settings)
  if args.matrix_rows is None:
    args.matrix_rows = largest
  elif args.matrix_rows < largest:
    p.error(f"--matrix-rows: got {args.matrix_rows}, expected at least "
            f"the largest m ({largest})")
  with common.make_context(args, "one_bit") as ctx:
    for task in cells.one_bit_tasks(ctx, settings, args.matrix_rows):
      cells.run_cell(ctx, task)
    rows = tables.summarize(out / "results.csv")
    common.write_summary(out, rows)
  main_rows = [r for r in rows if r["experiment"] == "one_bit"]
  by_m = [r for r in main_rows if _parse(r["setting"])["s"] == args.scale]
  by_s = [r for r in main_rows if _parse(r["setting"])["m"] == args.m]
  common.plot_curves(out, by_m, "measurements m", "one_bit_psnr_vs_m.png",
                     x_of=lambda st: _parse(st)["m"])
  common.plot_curves(out, by_s, f"noise scale s (m = {args.m})",
                     "one_bit_psnr_vs_scale.png",
                     x_of=lambda st: _parse(st)["s"])


if __name__ == "__main__":
  main()
