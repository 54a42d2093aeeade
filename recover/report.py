"""Headline numbers from finished experiment folders.

python -m recover.report [--results results] [--out results/REPORT.md]

Reads ``results/<experiment>/results.csv`` (whatever exists), and writes a
Markdown report: mean PSNR ± standard error per method and setting, and the
paper's equal-quality claims with their targets, computed with
``mapflow.metrics.equal_quality_ratio``, plus ``headline.json``.
Supplementary folders (``SUPPLEMENTARY``: the same experiment with other
options) get their own tables and claims, each cell they lack read from
the main folder and marked.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from mapflow import experiments, metrics
from mapflow.checkpoint import write_json_atomic, write_text_atomic

# (folder, experiment, x-axis label, how to read the setting's x value)
TABLES = (
    ("sinusoidal", "sinusoidal", "s", float),
    ("sinusoidal", "sinusoidal_ood", "s", float),
    ("radial", "radial", "s", float),
    ("radial", "radial_ood", "s", float),
    ("one_bit", "one_bit", "m, s", None),
    ("one_bit", "one_bit_ood", "m, s", None),
    ("digit_noise", "digits", "", None),
    ("subpixel", "subpixel", "", None),
)

COMMANDS = {
    "sinusoidal": ("python -m recover.sinusoidal --out results/sinusoidal "
                   "--inits measurements,zeros,pixels,pixels@0.01,"
                   "pixels@0.003"),
    "radial": ("python -m recover.radial --out results/radial "
               "--inits measurements,zeros,isotropic,pixels,pixels@0.01,"
               "pixels@0.003"),
    "one_bit": "python -m recover.one_bit --out results/one_bit",
    "digit_noise": "python -m recover.digit_noise --out results/digit_noise",
    "subpixel": "python -m recover.subpixel --out results/subpixel",
}

# Supplementary runs: (folder, the main folder it varies, the command, what
# it varies).  A method or setting such a folder lacks is read from its main
# folder (that method was not rerun there) and marked; its claims are
# computed on those merged curves.
SUPPLEMENTARY = (
    ("sinusoidal_iso", "sinusoidal",
     "python -m recover.sinusoidal --out results/sinusoidal_iso --methods "
     "ours,ours_ext --inits measurements,zeros,isotropic",
     "ours also offered the isotropic continuation start"),
    ("one_bit_inits", "one_bit",
     "python -m recover.one_bit --out results/one_bit_inits --methods "
     "ours,ours_ext,asim --inits measurements,zeros,isotropic",
     "the flow methods also offered the measurement and isotropic starts"),
    ("one_bit_random", "one_bit",
     "python -m recover.one_bit --out results/one_bit_random --inits "
     "zeros,random",
     "every flow method also offered the `random` start (restarts from "
     "random latents)"),
)
BORROWED = "†"


def _setting_dict(setting):
  return dict((k, float(v)) for k, v in (p.split("=")
                                         for p in setting.split(",")))


def curve(rows, experiment, method, x_of, keep=lambda s: True):
  pts = sorted((x_of(r["setting"]), r["psnr_mean"]) for r in rows
               if r["experiment"] == experiment and r["method"] == method
               and keep(r["setting"]))
  return [p[0] for p in pts], [p[1] for p in pts]


def _ratio(a, b):
  if len(a[0]) < 2 or len(b[0]) < 2:
    return float("nan")
  return metrics.equal_quality_ratio(a, b)


def claims(rows_by_folder):
  """The paper's four claims, each as (name, measured, target, met)."""
  out = []
  for kind, target in (("sinusoidal", 3.0), ("radial", 1.5)):
    rows = rows_by_folder.get(kind)
    if rows:
      for ours in ("ours", "ours_ext"):
        r = _ratio(curve(rows, kind, ours, float),
                   curve(rows, kind, "bm3d", float))
        out.append({"claim": f"{kind.upper()}: noise std {ours} tolerates "
                             "at BM3D's PSNR (x BM3D's)",
                    "measured": r, "target": f">= {target:g}x",
                    "met": bool(r >= target) if math.isfinite(r) else False})
  rows = rows_by_folder.get("one_bit")
  if rows:
    s_main = _one_bit_main_scale(rows)
    keep = lambda st: _setting_dict(st)["s"] == s_main
    x_of = lambda st: _setting_dict(st)["m"]
    for ours in ("ours", "ours_ext"):
      r = _ratio(curve(rows, "one_bit", "asim", x_of, keep),
                 curve(rows, "one_bit", ours, x_of, keep))
      out.append({"claim": f"1-bit CS (s={s_main:g}): measurements Asim needs "
                           f"for {ours}'s PSNR (x {ours}'s)",
                  "measured": r, "target": ">= 2x",
                  "met": bool(r >= 2.0) if math.isfinite(r) else False})
  rows = rows_by_folder.get("digit_noise")
  if rows:
    by = {r["method"]: r["psnr_mean"] for r in rows
          if r["experiment"] == "digits"}
    base = {m: v for m, v in by.items()
            if m in ("ablation", "asim", "bora", "bm3d")}
    if "ours" in by and base:
      best = max(base, key=base.get)
      for ours in ("ours", "ours_ext"):
        if ours in by:
          gap = by[ours] - base[best]
          out.append({"claim": f"digit noise: {ours} minus the best baseline "
                               f"({best}) in dB",
                      "measured": gap, "target": ">= +3 dB",
                      "met": bool(gap >= 3.0)})
  return out


def _one_bit_main_scale(rows):
  """The noise scale shared by most one_bit settings (the PSNR-vs-m curve)."""
  counts = {}
  for r in rows:
    if r["experiment"] == "one_bit":
      s = _setting_dict(r["setting"])["s"]
      counts[s] = counts.get(s, 0) + 1
  return max(counts, key=counts.get)


def merge_supplementary(supplementary_rows, main_rows):
  """A supplementary folder's summary rows, plus its main folder's rows for
  each (experiment, setting, method) it lacks, marked ``borrowed``."""
  have = {(r["experiment"], r["setting"], r["method"])
          for r in supplementary_rows}
  merged = [dict(r, borrowed=False) for r in supplementary_rows]
  merged += [dict(r, borrowed=True) for r in main_rows
             if (r["experiment"], r["setting"], r["method"]) not in have]
  return merged


def markdown_tables(rows_by_folder, commands=None):
  """One table per experiment; ``commands`` maps a folder to the command
  that regenerates it (default ``COMMANDS``)."""
  commands = COMMANDS if commands is None else commands
  lines = []
  for folder, experiment, _, _ in TABLES:
    rows = [r for r in rows_by_folder.get(folder, [])
            if r["experiment"] == experiment]
    if not rows:
      continue
    rows = sorted(rows, key=lambda r: experiments._setting_key(r["setting"]))
    methods = [m for m in experiments.DENOISING_METHODS + ("ours_ext",)
               if any(r["method"] == m for r in rows)]
    methods = list(dict.fromkeys(methods))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    n = max(r["n"] for r in rows)
    lines.append(f"### {experiment} (n = {n} images per cell; "
                 f"`{commands[folder]}`)\n")
    lines.append("| setting | " + " | ".join(methods) + " |")
    lines.append("|---" * (len(methods) + 1) + "|")
    for st in settings:
      cells = []
      for m in methods:
        hit = [r for r in rows if r["setting"] == st and r["method"] == m]
        if hit:
          h = hit[0]
          se = ("" if not math.isfinite(h["psnr_stderr"]) else
                f" ± {h['psnr_stderr']:.2f}")
          mark = BORROWED if h.get("borrowed") else ""
          cells.append(f"{h['psnr_mean']:.2f}{se} ({_fmt_hyper(h['hyper'])})"
                       f"{mark}")
        else:
          cells.append("—")
      lines.append(f"| {st} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def _claim_rows(claim_list):
  rows = []
  for c in claim_list:
    val = c["measured"]
    shown = ("n/a (curves do not overlap)" if not math.isfinite(val) else
             f"{val:.2f}" + ("x" if "dB" not in c["target"] else " dB"))
    rows.append(f"| {c['claim']} | {shown} | {c['target']} | "
                f"{'yes' if c['met'] else 'no'} |")
  return rows


def _fmt_hyper(h):
  """``"0.5"`` -> ``0.5``; a value chosen with its start, ``"0.5|zeros"``,
  -> ``0.5, from zeros`` (a bare ``|`` would split a Markdown cell)."""
  value, _, start = str(h).partition("|")
  try:
    value = f"{float(value):.3g}"
  except ValueError:
    pass
  return f"{value}, from {start}" if start else value


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m recover.report",
                              description=__doc__.splitlines()[0])
  p.add_argument("--results", default="results")
  p.add_argument("--out", default=None,
                 help="Markdown file (default RESULTS/REPORT.md)")
  args = p.parse_args(argv)
  root = Path(args.results)
  rows_by_folder = {}
  for folder in COMMANDS:
    f = root / folder / "results.csv"
    if f.is_file():
      rows_by_folder[folder] = experiments.summarize(f)
  if not rows_by_folder:
    raise SystemExit(f"--results: no */results.csv under {root}")
  cl = claims(rows_by_folder)
  text = ["# Results\n",
          "Mean PSNR (dB) ± standard error over the reported images; the "
          "chosen hyperparameter (β, γ, λ or BM3D's σ), picked by mean PSNR "
          "on the 16 validation images, in brackets, with the start where "
          "it was chosen too (`--inits`).\n",
          "## Claims\n",
          "| claim (paper) | measured | target | met |",
          "|---|---|---|---|"]
  text += _claim_rows(cl)
  text += ["", "## Tables\n", markdown_tables(rows_by_folder)]
  supplementary = []
  for folder, main_folder, command, what in SUPPLEMENTARY:
    f = root / folder / "results.csv"
    if not f.is_file():
      continue
    merged = merge_supplementary(experiments.summarize(f),
                                 rows_by_folder.get(main_folder, []))
    sup_claims = claims({main_folder: merged})
    supplementary.append({"folder": folder, "varies": main_folder,
                          "command": command, "claims": sup_claims})
    text += [f"## Supplementary: `{folder}`\n",
             f"The `{main_folder}` experiment with {what}. Cells marked "
             f"{BORROWED} are not in this folder and are read from "
             f"`{main_folder}`.\n",
             "| claim (paper) | measured | target | met |",
             "|---|---|---|---|"]
    text += _claim_rows(sup_claims)
    text += ["", markdown_tables({main_folder: merged},
                                 {main_folder: command})]
  out = Path(args.out) if args.out else root / "REPORT.md"
  write_text_atomic(out, "\n".join(text) + "\n")
  write_json_atomic(root / "headline.json",
                    {"claims": cl, "supplementary": supplementary})
  print("\n".join(text))


if __name__ == "__main__":
  main()
