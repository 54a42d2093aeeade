"""Headline numbers from finished experiment folders.

python -m recover.report [--results results] [--out results/REPORT.md]

Reads ``results/<experiment>/results.csv`` and ``selection.csv`` (whatever
exists) and writes a Markdown report plus ``headline.json`` beside it:

* the paper's four claims, each with a paired bootstrap 95% interval over
  the reported images (``mapflow.metrics.paired_bootstrap``: resample the
  images, recompute every curve and the claim);
* what every method is offered (``recover.paper.protocol``);
* mean PSNR ± standard error per method and setting, with the chosen
  value and start;
* every cell whose chosen value sits at the edge of what was tried.

Supplementary folders (``SUPPLEMENTARY``: the same experiments with other
options, or the old prior) get their own claims and tables, each cell they
lack read from the folder they vary and marked.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from mapflow import metrics
from mapflow.io import file_in_the_way, write_json_atomic, write_text_atomic
from recover.paper import tables
from recover.paper.cells import R2R_ALPHA, R2R_DRAWS, R2R_REFINED
from recover.paper.protocol import protocol_table

# (folder kind, experiment, axis label)
TABLES = (
    ("sinusoidal", "sinusoidal", "s"),
    ("sinusoidal", "sinusoidal_ood", "s"),
    ("radial", "radial", "s"),
    ("radial", "radial_ood", "s"),
    ("one_bit", "one_bit", "m, s"),
    ("one_bit", "one_bit_ood", "m, s"),
    ("digit_noise", "digits", ""),
    ("subpixel", "subpixel", ""),
)

COMMANDS = {
    "sinusoidal": "python -m recover.sinusoidal --out results/sinusoidal",
    "radial": "python -m recover.radial --out results/radial",
    "one_bit": "python -m recover.one_bit --out results/one_bit",
    "digit_noise": "python -m recover.digit_noise --out results/digit_noise",
    "subpixel": "python -m recover.subpixel --out results/subpixel",
}
METHOD_ORDER = ("ours", "ours_heldout", "ours_ext", "ablation", "asim",
                "bora", "bm3d")

_V1 = ("the first prior (`fashion_mnist_realnvp` at step 5,200, 3.21 "
       "bits/dim) under the first protocol (fixed paper grids; ours "
       "offered more starts and learning rates than Asim et al.)")
# (folder, its kind, the folder its missing cells come from, command, what
# it varies)
SUPPLEMENTARY = (
    ("v1/sinusoidal", "sinusoidal", None,
     "python -m recover.sinusoidal --out results/sinusoidal --inits "
     "measurements,zeros,pixels,pixels@0.01,pixels@0.003 (commit 599ba28)",
     _V1),
    ("v1/radial", "radial", None,
     "python -m recover.radial --out results/radial --inits measurements,"
     "zeros,isotropic,pixels,pixels@0.01,pixels@0.003 (commit 599ba28)",
     _V1 + "; ours took the isotropic start's 200 steps at s = 0.8 and "
     "1.6, every other flow method 100"),
    ("v1/one_bit", "one_bit", None,
     "python -m recover.one_bit --out results/one_bit (commit 599ba28)", _V1),
    ("v1/digit_noise", "digit_noise", None,
     "python -m recover.digit_noise --out results/digit_noise (commit "
     "599ba28)", _V1),
    ("v1/subpixel", "subpixel", None,
     "python -m recover.subpixel --out results/subpixel (commit 599ba28)",
     _V1),
    ("v1/sinusoidal_iso", "sinusoidal", "v1/sinusoidal",
     "python -m recover.sinusoidal --out results/sinusoidal_iso --methods "
     "ours,ours_ext --inits measurements,zeros,isotropic (commit 599ba28)",
     _V1 + ", ours also offered the isotropic continuation start"),
    ("v1/one_bit_inits", "one_bit", "v1/one_bit",
     "python -m recover.one_bit --out results/one_bit_inits --methods "
     "ours,ours_ext,asim --inits measurements,zeros,isotropic (commit "
     "599ba28)",
     _V1 + ", the flow methods also offered the measurement and isotropic "
     "starts"),
    ("v1/one_bit_random", "one_bit", "v1/one_bit",
     "python -m recover.one_bit --out results/one_bit_random --inits "
     "zeros,random (commit 599ba28)",
     _V1 + ", every flow method also offered the `random` start"),
)
BORROWED = "†"
BASELINES = ("ablation", "asim", "bora", "bm3d")


def _setting_dict(setting):
  return dict((k, float(v)) for k, v in (p.split("=")
                                         for p in setting.split(",")))


def _one_bit_main_scale(cells):
  """The noise scale shared by most one_bit settings (the PSNR-vs-m curve)."""
  counts = {}
  for (exp, setting, _) in cells:
    if exp == "one_bit":
      s = _setting_dict(setting)["s"]
      counts[s] = counts.get(s, 0) + 1
  return max(counts, key=counts.get) if counts else None


def _paired(cells, keys):
  """Per-image PSNR arrays of ``keys`` (experiment, setting, method) over
  the images every one of them has, in one order."""
  ids = None
  for k in keys:
    have = set(cells[k])
    ids = have if ids is None else ids & have
  ids = sorted(ids or ())
  return {k: np.array([cells[k][i] for i in ids]) for k in keys}, len(ids)


def _curve_ratio(cells, exp, a, b, x_of, keep=lambda s: True):
  """``equal_quality_ratio`` of method a's curve over method b's, with its
  paired bootstrap interval; None if either curve has < 2 points."""
  def pts(method):
    return sorted((x_of(s), (e, s, m)) for (e, s, m) in cells
                  if e == exp and m == method and keep(s))
  pa, pb = pts(a), pts(b)
  # Only where both curves have cells: a point that one method has reached
  # and the other not yet would stretch the curves past what the claim's
  # row says it covers (``_settings_of``).
  both = {x for x, _ in pa} & {x for x, _ in pb}
  pa, pb = [q for q in pa if q[0] in both], [q for q in pb if q[0] in both]
  if len(pa) < 2 or len(pb) < 2:
    return None
  data, n = _paired(cells, [k for _, k in pa + pb])
  if n == 0:
    return None

  def stat(d):
    ca = ([x for x, _ in pa], [float(np.mean(d[k])) for _, k in pa])
    cb = ([x for x, _ in pb], [float(np.mean(d[k])) for _, k in pb])
    return metrics.equal_quality_ratio(ca, cb)
  return metrics.paired_bootstrap(stat, data) + (n,)


def _settings_of(cells, exp, methods, name, keep=lambda s: True,
                 x_of=float):
  """``"name ∈ {...}"``: the settings where every one of ``methods`` has a
  cell, so a claim over a curve still being run says how far it reaches."""
  have = [{x_of(s) for (e, s, m) in cells if e == exp and m == method
           and keep(s)} for method in methods]
  xs = sorted(set.intersection(*have)) if have else []
  return f"{name} ∈ {{{', '.join(f'{x:g}' for x in xs)}}}"


def claims(cells):
  """The paper's four claims on per-image PSNR ``cells`` ({(experiment,
  setting, method): {image: psnr}}), each with its bootstrap interval."""
  out = []
  methods = {m for (_, _, m) in cells}
  ours_names = [m for m in ("ours", "ours_ext") if m in methods]

  def add(name, res, target, unit, over=None):
    point, lo, hi, n_ok, n = res
    out.append({"claim": name, "measured": point, "lo": lo, "hi": hi,
                "finite_resamples": n_ok, "images": n, "over": over,
                "target": f">= {target:g}{unit}" if unit == "x"
                else f">= +{target:g} dB",
                "met": bool(math.isfinite(point) and point >= target)})

  for kind, target in (("sinusoidal", 3.0), ("radial", 1.5)):
    for ours in ours_names:
      res = _curve_ratio(cells, kind, ours, "bm3d", float)
      if res is not None:
        add(f"{kind.upper()}: noise std {ours} tolerates at BM3D's PSNR "
            "(x BM3D's)", res, target, "x",
            _settings_of(cells, kind, (ours, "bm3d"), "s"))
  s_main = _one_bit_main_scale(cells)
  if s_main is not None:
    for ours in ours_names:
      res = _curve_ratio(cells, "one_bit", "asim", ours,
                         lambda st: _setting_dict(st)["m"],
                         lambda st: _setting_dict(st)["s"] == s_main)
      if res is not None:
        add(f"1-bit CS (s={s_main:g}): measurements Asim needs for {ours}'s "
            f"PSNR (x {ours}'s)", res, 2.0, "x",
            _settings_of(cells, "one_bit", ("asim", ours), "m",
                         lambda st: _setting_dict(st)["s"] == s_main,
                         lambda st: _setting_dict(st)["m"]))
  digit = [k for k in cells if k[0] == "digits"]
  base = [k for k in digit if k[2] in BASELINES]
  for ours in ours_names:
    mine = [k for k in digit if k[2] == ours]
    if not mine or not base:
      continue
    data, n = _paired(cells, mine + base)

    def gap(d, mine=mine):
      return float(np.mean(d[mine[0]]) - max(np.mean(d[k]) for k in base))
    best = max(base, key=lambda k: np.mean(data[k]))[2]
    add(f"digit noise: {ours} minus the best baseline ({best}; the best "
        "in each resample) in dB", metrics.paired_bootstrap(gap, data) + (n,),
        3.0, "dB")
  return out


def _claim_rows(claim_list):
  rows = []
  for c in claim_list:
    val = c["measured"]
    unit = " dB" if "dB" in c["target"] else "x"
    if not math.isfinite(val):
      shown = "n/a (curves do not overlap)"
    else:
      shown = f"{val:.2f}{unit}"
    interval = ("—" if not math.isfinite(c["lo"]) else
                f"[{c['lo']:.2f}, {c['hi']:.2f}]{unit}")
    if 0 < c["finite_resamples"] < 2000:
      interval += f" ({c['finite_resamples']} of 2000 resamples overlap)"
    if c.get("over"):
      shown += f" (over {c['over']})"
    rows.append(f"| {c['claim']} | {shown} | {interval} | {c['target']} | "
                f"{'**yes**' if c['met'] else 'no'} |")
  return rows


CLAIM_HEADER = ["| claim (paper) | measured | 95% interval (paired "
                "bootstrap over images) | target | reproduced |",
                "|---|---|---|---|---|"]


def _fmt_hyper(h):
  """``"0.5"`` -> ``0.5``; ``"0.5|zeros"`` -> ``0.5, from zeros``."""
  value, start = tables.split_hyper(h)
  try:
    value = f"{float(value):.3g}"
  except ValueError:
    pass
  return f"{value}, from {start}" if start else value


def markdown_tables(summary_rows, kind, command):
  """One table per experiment of a folder of this ``kind``."""
  lines = []
  for k, experiment, _ in TABLES:
    if k != kind:
      continue
    rows = [r for r in summary_rows if r["experiment"] == experiment]
    if not rows:
      continue
    rows = sorted(rows, key=lambda r: tables.setting_key(r["setting"]))
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in rows)]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    n = max(r["n"] for r in rows)
    lines.append(f"### {experiment} (n = {n} images per cell; "
                 f"`{command}`)\n")
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


def heldout_gaps(cells):
  """Per (experiment, setting): ours chosen without ground truth
  (``ours_heldout``) minus ours chosen by validation PSNR, in dB."""
  out = []
  for (exp, setting, m), v in sorted(cells.items()):
    if m != "ours_heldout" or exp.endswith("_ood"):
      continue
    oracle = cells.get((exp, setting, "ours"))
    if oracle:
      out.append((exp, setting, float(np.mean(list(v.values()))),
                  float(np.mean(list(oracle.values())))))
  return out


def _heldout_lines(gaps):
  if not gaps:
    return []
  lines = ["## Hyperparameters without ground truth (main folders)\n",
           "`ours_heldout` chooses β and the start without looking at a "
           "clean image (`mapflow.holdout`): in denoising by the MAP's "
           "error estimated from recorrupted measurements (fitted to "
           f"y + αz, checked against y - z/α, α = {R2R_ALPHA:g}; "
           f"its {R2R_REFINED} best by one draw of z scored again "
           f"as the mean over {R2R_DRAWS}, in antithetic pairs z, "
           f"-z, until the {R2R_REFINED} best by the current scores all "
           "are), in 1-bit CS and "
           "sub-pixel imputation by its error predicting 20% of the "
           "measurements held out, in digit noise by how far the "
           "residual's log-density per pixel under the noise flow is from "
           "held-out digits' (a discrepancy principle); `ours` "
           "chooses by validation PSNR against the truth (the oracle). "
           "Goal: within 0.5 dB everywhere.\n",
           "| experiment | setting | ours (oracle) | ours_heldout | gap (dB) "
           "| within 0.5 dB |", "|---|---|---|---|---|---|"]
  for exp, setting, h, o in sorted(gaps, key=lambda g: (
      g[0], tables.setting_key(g[1]))):
    lines.append(f"| {exp} | {setting} | {o:.2f} | {h:.2f} | {h - o:+.2f} | "
                 f"{'yes' if h >= o - 0.5 else '**no**'} |")
  return lines + [""]


def mean_image_floor(cells, data_dir=None):
  """``[(experiment, setting, n, floor, best, below)]`` per main cell: the
  mean of the prior's training images, one image whatever y is, scored
  on the cell's reported images (``floor``, mean PSNR); the best method
  ``(name, PSNR)``; the methods whose mean PSNR is below it.  Empty if
  Fashion-MNIST is not installed."""
  from mapflow import data
  try:
    train = data.load("fashion_mnist", "train", data_dir=data_dir)
    test = data.load("fashion_mnist", "test", data_dir=data_dir)
  except data.DatasetNotFoundError:
    return []
  mean = train.astype(np.float64).mean(axis=0) / 255.0
  by_cell = {}
  for (exp, setting, m), per in cells.items():
    if not exp.endswith("_ood"):
      by_cell.setdefault((exp, setting), {})[m] = per
  rows = []
  for (exp, setting), methods in sorted(by_cell.items(), key=lambda kv: (
      kv[0][0], tables.setting_key(kv[0][1]))):
    ids = sorted({int(i) for per in methods.values() for i in per})
    x = test[ids].astype(np.float64) / 255.0
    floor = float(np.mean(metrics.psnr(x, np.broadcast_to(mean, x.shape))))
    means = {m: float(np.mean(list(per.values())))
             for m, per in methods.items()}
    best = max(means, key=means.get)
    below = sorted((m for m, v in means.items() if v < floor),
                   key=means.get)
    rows.append((exp, setting, len(ids), floor, (best, means[best]), below))
  return rows


def _floor_lines(floor):
  if not floor:
    return []
  floors = sorted({round(fl, 2) for _, _, _, fl, _, _ in floor})
  same = (f"scores {floors[0]:.2f} dB on the reported images (the same "
          "in every cell)" if len(floors) == 1 else
          f"scores {floors[0]:.2f} to {floors[-1]:.2f} dB on the cells' "
          "reported images")
  lines = ["## A floor: the training images' mean (main folders)\n",
           "The mean of the prior's training images, one image for every "
           f"measurement (it ignores y), {same}. A method below it "
           "recovers less, by PSNR, than the average garment.\n"]
  low = [f for f in floor if f[5]]
  if not low:
    return lines + ["Every method in every cell is above it.\n"]
  lines += ["| experiment | setting | training mean | best method | "
            "methods below the mean |", "|---|---|---|---|---|"]
  for exp, setting, n, fl, (bm, bv), below in low:
    lines.append(f"| {exp} | {setting} | {fl:.2f} | {bm} {bv:.2f} | "
                 f"{', '.join(below)} |")
  return lines + [""]


def folder_edges(folder: Path):
  """``tables.edge_choices`` of a results folder (its reported cells)."""
  res, sel = folder / "results.csv", folder / "selection.csv"
  if not (res.is_file() and sel.is_file()):
    return []
  chosen = {}
  for r in tables.read_rows(res):
    if not r["experiment"].endswith("_ood"):
      chosen[(r["experiment"], r["setting"], r["method"])] = r["hyper"]
  return tables.edge_choices(tables.read_rows(sel), chosen)


def folder_narrow_offers(folder: Path):
  """Reported flow cells of a results folder chosen without some start the
  protocol now offers them (selection.csv has no score from it: a rerun
  chooses them again), or chosen with a start it does not offer (a probe's
  wider --inits: a protocol rerun keeps them).  Returns ``[(experiment,
  setting, method, [missing start labels], outside start or None)]``."""
  from recover.paper.methods import METHODS, offers
  from recover.paper.protocol import PROTOCOLS
  res, sel = folder / "results.csv", folder / "selection.csv"
  if not (res.is_file() and sel.is_file()):
    return []
  tried = {}
  for r in tables.read_rows(sel):
    tried.setdefault((r["experiment"], r["setting"], r["method"]),
                     set()).add(r.get("start", ""))
  out, seen = [], set()
  for r in tables.read_rows(res):
    key = (r["experiment"], r["setting"], r["method"])
    method, protocol = METHODS.get(key[2]), PROTOCOLS.get(key[0])
    if key in seen or method is None or protocol is None or \
        method.family != "flow":
      continue
    seen.add(key)
    # A protocol offers only starts its tasks allow (noise_latent: digits).
    labels = [s.label for s in offers(method, protocol.starts)]
    missing = [s for s in labels if s not in tried.get(key, set())]
    start = tables.split_hyper(r["hyper"])[1]
    outside = None if start in labels else start
    if missing or outside:
      out.append(key + (missing, outside))
  return out


def _narrow_lines(narrow):
  if not narrow:
    return ["Every flow cell was chosen among every start its protocol "
            "offers now.\n"]
  n = len(narrow)
  lines = [f"{n} {'cell was' if n == 1 else 'cells were'} chosen before "
           "some start was offered "
           "(a rerun chooses them again, measuring only what is new) or "
           "with a start the protocol does not offer (a probe's; a rerun "
           "keeps them):\n"]
  for exp, setting, method, missing, outside in narrow:
    why = ([f"without {', '.join(missing)}"] if missing else []) + (
        [f"chosen from {outside}, not offered"] if outside else [])
    lines.append(f"- {exp} {setting} {method}: {'; '.join(why)}")
  return lines + [""]


def _edge_lines(edges):
  if not edges:
    return ["Every chosen value is interior to what was tried.\n"]
  lines = [f"{len(edges)} cell{'' if len(edges) == 1 else 's'} chose a "
           "value at the edge of what was "
           "tried (the grid should grow):\n"]
  for exp, setting, method, v, side in edges:
    lines.append(f"- {exp} {setting} {method}: {v:g} ({side} tried)")
  return lines + [""]


def merge(cells, base_cells):
  """A folder's cells plus the cells of ``base_cells`` it lacks; returns
  the merged cells and the set of borrowed keys."""
  merged = dict(cells)
  borrowed = set()
  for k, v in base_cells.items():
    if k not in merged:
      merged[k] = v
      borrowed.add(k)
  return merged, borrowed


def _summary_of(cells, hypers, borrowed=()):
  out = []
  for k in sorted(cells, key=lambda k: (k[0], tables.setting_key(k[1]),
                                        k[2])):
    m, se = tables.mean_and_stderr(list(cells[k].values()))
    out.append({"experiment": k[0], "setting": k[1], "method": k[2],
                "hyper": hypers.get(k, ""), "n": len(cells[k]),
                "psnr_mean": m, "psnr_stderr": se,
                "borrowed": k in borrowed})
  return out


# What an experiment's folder holds that the report reads.
INPUTS = ("results.csv", "selection.csv", tables.DRAWS_FILE, "run.json",
          "summary.json")


def _check_tables(root: Path):
  """Every results table the report reads under ``root`` reads whole (its
  columns, each row's fields, its numbers), or the command ends naming
  the file.  (The
  first protocol's selection tables have other columns; the report reads
  only their values.)"""
  folders = list(COMMANDS) + [sup[0] for sup in SUPPLEMENTARY]
  for f in (root / folder / "results.csv" for folder in folders):
    if not f.is_file():
      continue
    try:
      tables.read_table(f, tables.RESULT_COLUMNS, tables.RESULT_KEY,
                        tables.NUMBERS[f.name])
    except ValueError as e:
      raise SystemExit(f"--results: {e}") from None


def _read_folder(folder: Path):
  f = folder / "results.csv"
  if not f.is_file():
    return None, None
  hypers = {(r["experiment"], r["setting"], r["method"]): r["hyper"]
            for r in tables.read_rows(f)}
  return tables.per_image(f), hypers


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m recover.report",
                              description=__doc__.splitlines()[0])
  p.add_argument("--results", default="results")
  p.add_argument("--out", default=None,
                 help="Markdown file (default RESULTS/REPORT.md); "
                      "headline.json is written beside it")
  args = p.parse_args(argv)
  if args.out is not None:
    # Checked before the report is built, not when it is written.
    out = Path(args.out)
    if not args.out.strip() or out.is_dir():
      p.error(f"--out: got {args.out!r}, expected a file path (Markdown)")
    bad = file_in_the_way(out.parent)
    if bad is not None:
      p.error(f"--out: got {args.out!r}, under {str(bad)!r}, which is a "
              "file")
  root = Path(args.results)
  if args.out is not None:
    out = Path(args.out)
    if (out.parent / "results.csv").is_file() or out.name in INPUTS:
      p.error(f"--out: got {args.out!r}, inside an experiment's folder or "
              "named as one of its tables; expected a report path where "
              "no result lives (default RESULTS/REPORT.md)")
  _check_tables(root)
  main_cells, main_hypers, edges, narrow = {}, {}, [], []
  main_text = []
  for kind, command in COMMANDS.items():
    cells, hypers = _read_folder(root / kind)
    if cells is None:
      continue
    main_cells.update(cells)
    main_hypers.update(hypers)
    main_text.append(markdown_tables(_summary_of(cells, hypers), kind,
                                     command))
    edges += folder_edges(root / kind)
    narrow += folder_narrow_offers(root / kind)
  found_sup = [s for s in SUPPLEMENTARY
               if (root / s[0] / "results.csv").is_file()]
  if not main_cells and not found_sup:
    raise SystemExit(f"--results: no */results.csv under {root}")
  cl = claims(main_cells)
  text = ["# Results\n",
          "Mean PSNR (dB) ± standard error over the reported images; in "
          "brackets the value chosen (β, γ, λ or BM3D's σ) by mean PSNR on "
          "the 16 validation images, with the start it was chosen with.  "
          "Every claim carries a paired bootstrap 95% interval over the "
          "reported images (2,000 resamples of the images; every curve "
          "and the claim recomputed on each).  A claim is reproduced when "
          "its point estimate meets the target.\n",
          "## Claims (main folders)\n"]
  text += (CLAIM_HEADER + _claim_rows(cl)) if cl else [
      "No main folder has results yet (the fair-protocol runs are in "
      "progress); see the supplementary sections.\n"]
  text += ["", "## What each method is offered\n", protocol_table(), "",
           "## Edge optima (main folders)\n"] + _edge_lines(edges)
  text += ["## Cells chosen under a narrower offer (main folders)\n"
           ] + _narrow_lines(narrow)
  gaps = heldout_gaps(main_cells)
  text += _heldout_lines(gaps)
  floor = mean_image_floor(main_cells)
  text += _floor_lines(floor)
  text += ["## Tables\n"] + main_text
  supplementary = []
  for folder, kind, base, command, what in found_sup:
    cells, hypers = _read_folder(root / folder)
    borrowed = set()
    if base is not None:
      base_cells, base_hypers = _read_folder(root / base)
      if base_cells:
        cells, borrowed = merge(cells, base_cells)
        hypers = {**base_hypers, **hypers}
    sup_claims = claims(cells)
    sup_edges = folder_edges(root / folder)
    supplementary.append({"folder": folder, "varies": kind,
                          "command": command, "claims": sup_claims,
                          "edge_cells": len(sup_edges)})
    text += [f"## Supplementary: `{folder}`\n",
             f"The `{kind}` experiment with {what}." +
             (f" Cells marked {BORROWED} are not in this folder and are "
              f"read from `{base}`." if borrowed else "") + "\n"]
    if sup_claims:
      text += CLAIM_HEADER + _claim_rows(sup_claims) + [""]
    text += [f"Edge optima: {len(sup_edges)} cells.\n",
             markdown_tables(_summary_of(cells, hypers, borrowed), kind,
                             command)]
  out = Path(args.out) if args.out else root / "REPORT.md"
  write_text_atomic(out, "\n".join(text) + "\n")
  # Beside the report: a trial report elsewhere leaves the results alone.
  write_json_atomic(out.parent / "headline.json",
                    {"claims": cl, "edge_cells": len(edges),
                     "narrow_offer_cells": len(narrow),
                     "heldout": [{"experiment": e, "setting": st,
                                  "ours_heldout": h, "ours": o}
                                 for e, st, h, o in gaps],
                     "training_mean_floor": [
                         {"experiment": e, "setting": st, "images": n,
                          "psnr": fl, "best": bm, "best_psnr": bv,
                          "below": below}
                         for e, st, n, fl, (bm, bv), below in floor],
                     "supplementary": supplementary})
  print("\n".join(text))


if __name__ == "__main__":
  main()
