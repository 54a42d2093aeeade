"""Merge an experiment's results folder into another made by the same run.

python -m recover.merge --into results/one_bit results/one_bit_scales

A long experiment can be split over workers or machines by settings, each
writing its own folder (for 1-bit CS: ``--ms`` on one, ``--scales`` on the
other, both with the whole run's ``--matrix-rows``).  This puts the rows
of each FROM folder into INTO:

* ``run.json``: every setting both folders record must be equal (the
  machines that worked on them are pooled), or nothing is merged;
* ``results.csv``, ``selection.csv``, ``recorrupted.csv``: rows whose key
  INTO lacks are added; a key both hold must hold the same row, or nothing
  is merged;
* ``figures/`` (each cell's figure and its kept images): files INTO lacks
  are copied; one both hold must be the same bytes, or nothing is merged;
* ``summary.json`` is recomputed from the merged ``results.csv``.

Both folders are locked while this runs.  The curves drawn over all
settings (e.g. ``one_bit_psnr_vs_m.png``) are left as they were: the
experiment's next run on INTO finds every cell done, fits nothing and
redraws them.  FROM is left in place.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List

from mapflow import io as io_lib
from recover.paper import tables

# (file, columns, key)
TABLES = (("results.csv", tables.RESULT_COLUMNS, tables.RESULT_KEY),
          ("selection.csv", tables.SELECTION_COLUMNS, tables.SELECTION_KEY),
          (tables.DRAWS_FILE, tables.DRAWS_COLUMNS, tables.DRAWS_KEY))
# Columns that hold numbers (read as floats once merged).
NUMBERS = tables.NUMBERS


class MergeError(ValueError):
  """The folders disagree; nothing was written."""


def _run_info(folder: Path) -> dict:
  f = folder / "run.json"
  if not f.is_file():
    return {}
  try:
    info = json.loads(f.read_text())
  except ValueError as e:  # not JSON, or not UTF-8
    raise MergeError(f"{f}: not readable as JSON ({e})") from None
  if not isinstance(info, dict):
    raise MergeError(f"{f}: holds {type(info).__name__}, expected a JSON "
                     "object")
  return info


def _read_table(path: Path, columns, key) -> "tables.ResultTable":
  """A results table to read; one that cannot be read (or a row whose
  number is not one) is a MergeError."""
  try:
    return tables.read_table(path, columns, key, NUMBERS.get(path.name, ()))
  except ValueError as e:
    raise MergeError(str(e)) from None


def merged_run_info(into: dict, src: dict, src_name: str) -> dict:
  """``into``'s run record with ``src``'s added: a key both hold must be
  equal (``hosts`` are pooled; the prior's step and figure are facts about
  a shipped model, compared by its name)."""
  for k in sorted(set(into) & set(src)):
    if k == "hosts" or k.startswith("prior_"):
      continue
    if into[k] != src[k]:
      raise MergeError(f"{src_name}: run.json has {k} = {src[k]!r}, but "
                       f"the folder merged into has {into[k]!r}: they are "
                       "not parts of one run")
  hosts = list(into.get("hosts", []))
  hosts += [h for h in src.get("hosts", []) if h not in hosts]
  out = {**src, **into}
  if hosts:
    out["hosts"] = hosts
  return out


def _experiments(rows) -> set:
  """The experiments ``rows`` hold, their out-of-distribution rows
  counted as their own."""
  return {r["experiment"].removesuffix("_ood") for r in rows}


def _figure_files(folder: Path) -> List[Path]:
  root = folder / "figures"
  if not root.is_dir():
    return []
  return sorted(p.relative_to(folder) for p in root.rglob("*")
                if p.is_file() and not p.name.startswith("."))


def plan(into: Path, sources) -> tuple:
  """What merging ``sources`` into ``into`` adds: ``(run_info, {file:
  rows}, [(source, figure path)])``.  Each source is checked against
  ``into`` and against the sources before it, so two sources that
  disagree are refused too.  Raises ``MergeError`` on any disagreement;
  reads only."""
  info = _run_info(into)
  rows = {name: {} for name, _, _ in TABLES}   # key -> (row, where from)
  for name, columns, key in TABLES:
    for r in _read_table(into / name, columns, key).rows:
      rows[name][tuple(r[k] for k in key)] = (r, into / name)
  new_rows = {name: [] for name, _, _ in TABLES}
  figures = {}  # relative path -> the folder it comes from
  # One experiment per folder (its out-of-distribution rows beside it):
  # run.json does not name it, the results' rows do.
  experiment = _experiments(r for r, _ in rows["results.csv"].values())
  experiment_from = into
  for src in sources:
    info = merged_run_info(info, _run_info(src), str(src))
    theirs_rows = {name: _read_table(src / name, columns, key).rows
                   for name, columns, key in TABLES
                   if (src / name).is_file()}
    if "results.csv" in theirs_rows:
      theirs = _experiments(theirs_rows["results.csv"])
      if experiment and theirs and theirs != experiment:
        raise MergeError(f"{src}: holds results of {sorted(theirs)}, but "
                         f"{experiment_from} holds {sorted(experiment)}: "
                         "not parts of one run")
      if theirs and not experiment:
        experiment, experiment_from = theirs, src
    for name, _, key in TABLES:
      for r in theirs_rows.get(name, ()):
        k = tuple(r[c] for c in key)
        if k not in rows[name]:
          rows[name][k] = (r, src / name)
          new_rows[name].append(r)
        elif rows[name][k][0] != r:
          shown = ", ".join(f"{c}={v}" for c, v in zip(key, k))
          raise MergeError(f"{src / name}: the row ({shown}) differs from "
                           f"the one in {rows[name][k][1]}")
    for rel in _figure_files(src):
      first = into if (into / rel).exists() else figures.get(rel)
      if first is None:
        figures[rel] = src
      elif (first / rel).read_bytes() != (src / rel).read_bytes():
        raise MergeError(f"{src / rel}: differs from {first / rel}")
  return info, new_rows, sorted(figures.items())


def merge(into, sources) -> dict:
  """Merges each folder of ``sources`` into ``into`` (all locked, all
  checked before anything is written); returns ``{file: rows added}``
  (figures counted under ``"figures"``)."""
  into = Path(into)
  if not into.is_dir():
    raise MergeError(f"--into: {into} is not a folder")
  sources = [Path(s) for s in sources]
  seen = {}
  for s in sources:
    if not s.is_dir():
      raise MergeError(f"{s}: is not a folder")
    if s.resolve() == into.resolve():
      raise MergeError(f"{s}: is the folder merged into")
    if s.resolve() in seen:
      raise MergeError(f"{s}: is listed twice (also as {seen[s.resolve()]})")
    seen[s.resolve()] = s
  locks = []
  try:
    for folder, what in [(into, "--into")] + [(s, str(s)) for s in sources]:
      locks.append(io_lib.FolderLock(folder, what=what).acquire())
    info, rows, figures = plan(into, sources)
    added = {name: len(rows[name]) for name, _, _ in TABLES}
    added["figures"] = len(figures)
    for name, columns, key in TABLES:
      if rows[name]:
        tables.ResultTable(into / name, columns, key).add(rows[name])
    for rel, src in figures:
      (into / rel).parent.mkdir(parents=True, exist_ok=True)
      io_lib.write_bytes_atomic(into / rel, (src / rel).read_bytes())
    if info:
      io_lib.write_json_atomic(into / "run.json", info)
    if (into / "results.csv").is_file():
      io_lib.write_json_atomic(into / "summary.json",
                               tables.summarize(into / "results.csv"))
    return added
  finally:
    for lock in reversed(locks):
      lock.release()


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m recover.merge",
                              description=__doc__.splitlines()[0])
  p.add_argument("--into", required=True,
                 help="the results folder that receives the rows")
  p.add_argument("sources", nargs="+", help="folders made by the same run "
                 "with other settings")
  args = p.parse_args(argv)
  if not args.into.strip():
    p.error(f"--into: got {args.into!r}, expected a folder")
  try:
    added = merge(args.into, args.sources)
  except (MergeError, io_lib.LockedError, OSError) as e:
    # Folders that disagree or cannot be read, or one in use; anything
    # else is a fault of ours and keeps its traceback.
    raise SystemExit(f"error: {e}") from None
  print(", ".join(f"{n} +{k}" for n, k in added.items()) +
        f" -> {args.into}; rerun the experiment on it to redraw its curves")


if __name__ == "__main__":
  main()
