"""Result tables: per-image PSNR, every validation score, summaries.

``results.csv`` (one row per method, setting and reported image),
``selection.csv`` (one row per validation score: method, value, start and
the validation images it was measured on; ``val_score`` is in dB: the mean
PSNR against the truth, or for a method that chooses from the measurements
alone -10 log10 of an estimated squared error, from recorrupted or
held-out measurements, or under flow noise of the residual's typicality
gap) and ``recorrupted.csv`` (further draws of the
recorrupted estimates) are ``ResultTable`` files: keyed rows, rewritten
atomically after every addition, a row with a key already present
replacing the old one.  A killed and rerun experiment therefore loses no
finished row and duplicates none.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from mapflow import io as io_lib

RESULT_COLUMNS = ["experiment", "setting", "method", "hyper", "image",
                  "psnr"]
RESULT_KEY = ["experiment", "setting", "method", "image"]
SELECTION_COLUMNS = ["experiment", "setting", "method", "hyper", "start",
                     "val_images", "val_score"]
SELECTION_KEY = ["experiment", "setting", "method", "hyper", "start"]
# Further recorrupted draws of the configurations a blind selection scores
# again (draw 0 is selection.csv's score): the raw estimated mean squared
# error, which can be negative.
DRAWS_FILE = "recorrupted.csv"
DRAWS_COLUMNS = ["experiment", "setting", "method", "hyper", "start", "draw",
                 "val_images", "est_error"]
DRAWS_KEY = ["experiment", "setting", "method", "hyper", "start", "draw"]
# Each table's columns that hold numbers.
NUMBERS = {"results.csv": ("psnr",), "selection.csv": ("val_score",),
           DRAWS_FILE: ("est_error",)}


class ResultTable:
  """Rows keyed by some columns, persisted to CSV after every ``add``.

  ``done(**key)`` says whether a row is recorded; ``get(**key)`` returns
  it.  ``add`` replaces rows whose key is already present (in place), so
  no key is ever recorded twice.  A file with duplicate keys (written by an
  older version) is read with the last row of each key kept.
  """

  def __init__(self, path, columns: Sequence[str], key: Sequence[str]):
    self.path = Path(path)
    self.columns, self.key = list(columns), list(key)
    missing = [k for k in self.key if k not in self.columns]
    if missing:
      raise ValueError(f"key: {missing} are not among columns {self.columns}")
    self._rows: Dict[tuple, Dict[str, str]] = {}
    if self.path.is_file():
      with self.path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != self.columns:
          raise ValueError(
              f"{self.path}: has columns {reader.fieldnames}, expected "
              f"{self.columns}; move it away or use another --out")
        for r in reader:
          if None in r or None in r.values():
            # Extra fields land under None, missing ones read as None.
            n = len(r.get(None) or []) + sum(
                v is not None for k, v in r.items() if k is not None)
            raise ValueError(
                f"{self.path}: line {reader.line_num} has {n} fields, "
                f"expected {len(self.columns)} ({', '.join(self.columns)})")
          self._rows[self._key_of(r)] = r

  @property
  def rows(self) -> List[Dict[str, str]]:
    return list(self._rows.values())

  def _key_of(self, row) -> tuple:
    return tuple(_fmt(row[k]) for k in self.key)

  def done(self, **key) -> bool:
    return self._key_of(key) in self._rows

  def get(self, **key):
    return self._rows.get(self._key_of(key))

  def add(self, rows: Iterable[dict]):
    """Adds (or replaces) rows, dicts with every column; rewrites the file."""
    for r in rows:
      extra = set(r) - set(self.columns)
      lacking = set(self.columns) - set(r)
      if extra or lacking:
        raise ValueError(f"row: unexpected {sorted(extra)}, missing "
                         f"{sorted(lacking)}")
      row = {c: _fmt(r[c]) for c in self.columns}
      self._rows[self._key_of(row)] = row
    io_lib.write_csv_atomic(self.path, self.rows, self.columns)


def read_table(path, columns, key, numbers: Sequence[str] = ()
               ) -> ResultTable:
  """``ResultTable(path, columns, key)`` whose ``numbers`` columns are
  checked to parse as floats; a table that cannot be read, or a row whose
  number is not one, is a ValueError naming the file."""
  try:
    table = ResultTable(path, columns, key)
  except (ValueError, csv.Error) as e:  # UnicodeDecodeError included
    msg = str(e)
    raise ValueError(msg if str(path) in msg else f"{path}: {msg}") from None
  for r in table.rows:
    for c in numbers:
      try:
        float(r[c])
      except ValueError:
        shown = ", ".join(f"{k}={r[k]}" for k in key)
        raise ValueError(f"{path}: row ({shown}): {c} {r[c]!r} is not a "
                         "number") from None
  return table


def _fmt(v) -> str:
  if isinstance(v, (float, np.floating)):
    return f"{float(v):.6g}"
  return str(v)


def mean_and_stderr(values) -> Tuple[float, float]:
  """Mean and standard error of the mean."""
  v = np.asarray(values, np.float64)
  if v.size < 2:
    return float(v.mean()), float("nan")
  return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


def read_rows(path) -> List[dict]:
  with Path(path).open(newline="") as f:
    return list(csv.DictReader(f))


def summarize(results_csv) -> List[dict]:
  """Mean PSNR ± standard error per (experiment, setting, method)."""
  groups: Dict[tuple, list] = {}
  hyper: Dict[tuple, str] = {}
  for r in read_rows(results_csv):
    k = (r["experiment"], r["setting"], r["method"])
    groups.setdefault(k, []).append(float(r["psnr"]))
    hyper[k] = r["hyper"]
  out = []
  for k, v in sorted(groups.items(), key=lambda kv: (
      kv[0][0], setting_key(kv[0][1]), kv[0][2])):
    m, se = mean_and_stderr(v)
    out.append({"experiment": k[0], "setting": k[1], "method": k[2],
                "hyper": hyper[k], "n": len(v), "psnr_mean": m,
                "psnr_stderr": se})
  return out


def per_image(results_csv) -> Dict[tuple, Dict[str, float]]:
  """``{(experiment, setting, method): {image: psnr}}``."""
  out: Dict[tuple, Dict[str, float]] = {}
  for r in read_rows(results_csv):
    k = (r["experiment"], r["setting"], r["method"])
    out.setdefault(k, {})[r["image"]] = float(r["psnr"])
  return out


def setting_key(setting: str):
  """Sorts "0.5" and "m=100,s=1" settings numerically."""
  try:
    return (float(setting),)
  except ValueError:
    pass
  try:
    return tuple(float(p.split("=")[1]) for p in setting.split(","))
  except (ValueError, IndexError):
    return (math.inf, setting)


def hyper_label(value, start_label: str) -> str:
  """The ``hyper`` column of ``results.csv``: ``"0.5|pixels@0.01"``."""
  return f"{_fmt(float(value))}|{start_label}"


def split_hyper(hyper: str) -> Tuple[str, str]:
  """``"0.5|pixels@0.01"`` -> ``("0.5", "pixels@0.01")``; a bare value
  gives an empty start."""
  value, _, start = str(hyper).partition("|")
  return value, start


def edge_choices(selection_rows: Sequence[dict], chosen: Dict[tuple, str]):
  """Cells whose chosen value is at the edge of what was tried.

  ``chosen`` maps (experiment, setting, method) to the ``hyper`` recorded
  in results.csv.  A value is at the edge when it is the smallest or
  largest tried with the same start (0 is interior: the natural bound of
  every weight but BM3D's σ, which is never 0).  Reads selection.csv rows
  of this version (``start`` column) and of older ones (``"value|start"``).
  Returns ``[(experiment, setting, method, value, "smallest"|"largest")]``.
  """
  tried: Dict[tuple, set] = {}
  for r in selection_rows:
    value, start = split_hyper(r["hyper"])
    start = r.get("start", start) or start
    try:
      v = float(value)
    except ValueError:
      continue
    tried.setdefault((r["experiment"], r["setting"], r["method"], start),
                     set()).add(v)
  out = []
  for (exp, setting, method), hyper in chosen.items():
    value, start = split_hyper(hyper)
    vals = tried.get((exp.removesuffix("_ood"), setting, method, start))
    if not vals:
      continue
    v = float(value)
    if v == 0.0:
      continue
    if math.isclose(v, min(vals)):
      out.append((exp, setting, method, v, "smallest"))
    elif math.isclose(v, max(vals)):
      out.append((exp, setting, method, v, "largest"))
  return out
