"""The benchmark harness: every figure measured in this one process.

python -m bench --quick            # about a minute; what CI runs
python -m bench                    # the full list (tens of minutes on CPU)
python -m bench --out DIR --md BENCHMARKS.md

Writes ``DIR/bench.json`` (raw figures) and a Markdown report (``DIR/
BENCHMARKS.md`` unless ``--md`` names another file).  Times are medians over
repeats; figures that a busy machine distorts are also given as ratios
measured in the same run.  Sections: recovery throughput and compile time,
a β x m sweep against sequential calls, vmapped restarts, achieved FLOP/s
against a same-run matmul, time to quality against a GlowIP-style L-BFGS,
training throughput, scaling with image size and depth, mixed precision
(bfloat16) against float32, remat of scanned couplings, peak memory, and the README's demo from an
empty compile cache.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax

from bench import sections

QUICK = dict(tiny_prior=True, batches=(1, 8), steps=3, repeats=2, sweep_images=2,
             sweep_betas=(0.1, 1.0), sweep_ms=(100, 400), sweep_steps=2,
             sweep_max_batch=4, sweep_rounds=1,
             restarts=(1, 4), restart_batch=2, restart_steps=2,
             flops_batch=8, matmul_n=512, ttq_images=2,
             ttq_schedule=(2, 4), lbfgs_schedule=(2, 4), ttq_budget_s=None,
             ttq_tasks=("one_bit",),
             train_steps=3,
             train_batch=8, scaling_sizes=(28, 32), scaling_depths=(2,),
             scaling_batch=2, chunk_batches=(1,), chunk_steps=10,
             precision_images=2, precision_steps=3, remat_batch=2,
             remat_gradients=("recovery",), profile_batch=4,
             profile_steps=2,
             # Every shipped model compiles at full size: not a smoke test.
             skip=("models", "peer", "first_minute"))
FULL = dict(batches=(1, 64, 256), steps=10, repeats=3, sweep_images=16,
            sweep_betas=(0.1, 0.5, 1.0, 5.0, 10.0),
            sweep_ms=(100, 200, 400, 800, 1600, 3200), sweep_steps=20,
            sweep_max_batch=256,
            restarts=(1, 4, 16), restart_batch=4, restart_steps=20,
            flops_batch=64, matmul_n=2048, ttq_images=4,
            ttq_schedule=(10, 25, 50, 100, 200),
            lbfgs_schedule=(30, 100, 300, 600), ttq_budget_s=600,
            ttq_tasks=("denoise", "one_bit"),
            train_steps=30, train_batch=64, scaling_sizes=(28, 64, 256),
            scaling_depths=(1, 6), scaling_batch=4, chunk_batches=(1,),
            chunk_steps=20, precision_images=16, precision_steps=100,
            remat_batch=64, remat_gradients=("recovery", "training"),
            models_batch=64, first_minute_rounds=2)


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m bench",
                              description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true",
                 help="tiny sizes: checks the harness in about a minute")
  p.add_argument("--out", default="out/bench", help="folder for bench.json")
  p.add_argument("--md", default=None,
                 help="Markdown report path (default OUT/BENCHMARKS.md)")
  p.add_argument("--only", default="",
                 help="comma-separated subset of " + ",".join(sections.ALL))
  args = p.parse_args(argv)
  cfg = QUICK if args.quick else FULL
  names = [n for n in args.only.split(",") if n]
  if args.only and not names:
    # An empty list had run every section (tens of minutes).
    p.error(f"--only: got {args.only!r}, expected at least one of "
            f"{list(sections.ALL)} (leave it out for all)")
  names = names or [n for n in sections.ALL if n not in cfg.get("skip", ())]
  unknown = sorted(set(names) - set(sections.ALL))
  if unknown:
    p.error(f"--only: got {unknown}, expected some of {list(sections.ALL)}")
  from mapflow.io import file_in_the_way
  for flag, path, folder in (("--out", args.out, True),
                             ("--md", args.md, False)):
    if path is None:
      continue
    if not str(path).strip():
      p.error(f"{flag}: got {str(path)!r}, expected a "
              + ("folder" if folder else "file path"))
    # The report is written after every section has run: refuse a path it
    # could not be written to before spending the time.
    bad = file_in_the_way(path if folder else Path(path).parent)
    if bad is not None:
      p.error(f"{flag}: got {str(path)!r}, but {str(bad)!r} is a file")
    if not folder and Path(path).is_dir():
      p.error(f"{flag}: got {str(path)!r}, which is a folder; expected a "
              "file path")
    if not folder and Path(path).resolve() == (
        Path(args.out) / "bench.json").resolve():
      p.error(f"{flag}: got {str(path)!r}, the raw figures' own file; "
              "expected another path for the report")
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  report = {"mode": "quick" if args.quick else "full",
            "backend": jax.default_backend(),
            "device": str(jax.devices()[0].device_kind),
            "devices": jax.device_count(), "python": sys.version.split()[0],
            "jax": jax.__version__, "machine": platform.machine(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": {}}
  # The steps' XLA options, settled before any section's compile clock
  # runs (their first call compiles a tiny probe program).
  import mapflow as mf
  report["step_xla_options"] = mf.xla.step_options()
  from mapflow.io import write_json_atomic
  current = {}

  def save_partial(res):
    report["sections"][current["name"]] = dict(res, partial=True)
    write_json_atomic(out / "bench.json", report)

  ctx = sections.Context(cfg, save_partial)
  from tqdm.auto import tqdm
  for name in tqdm(names, desc="bench", unit="section"):
    current["name"] = name
    t = time.perf_counter()
    res = sections.ALL[name](ctx)
    res["section_wall_s"] = time.perf_counter() - t
    res["peak_rss_mb_so_far"] = sections.peak_rss_mb()
    res["device_peak_mb_so_far"] = sections.device_peak_mb()
    report["sections"][name] = res
    write_json_atomic(out / "bench.json", report)  # each section kept
  md = Path(args.md) if args.md else out / "BENCHMARKS.md"
  text = sections.markdown(report)
  from mapflow.io import write_text_atomic
  write_text_atomic(md, text)
  print(text)
  print(f"\nraw figures: {out / 'bench.json'}; report: {md}")


if __name__ == "__main__":
  main()
