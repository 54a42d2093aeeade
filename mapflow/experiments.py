"""Shared pieces of the paper's experiments (DESIGN.md, "Experiment protocol").

* ``protocol_indices``: the 16 validation and 64 reported test images.
* ``ResultTable``: per-cell results in a CSV that is rewritten atomically
  after every finished cell, so a rerun skips what is done and an interrupt
  loses nothing finished.
* ``bm3d_denoise``: the BM3D baseline (optional ``bm3d`` package).
* ``isotropic_like``: the ablation's Gaussian noise of the same average
  variance as a structured Gaussian noise model.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from mapflow import noise as noise_lib


def protocol_indices(n_test: int = 10000) -> Tuple[np.ndarray, np.ndarray]:
  """``(validation, reported)`` indices into the test split (16 and 64).

  ``np.random.seed(0); idx = np.random.choice(n_test, 80, False)``; the
  first 16 choose hyperparameters, the other 64 are reported.
  """
  state = np.random.get_state()
  try:
    np.random.seed(0)
    idx = np.random.choice(n_test, 80, False)
  finally:
    np.random.set_state(state)
  return idx[:16], idx[16:]


def isotropic_like(noise) -> noise_lib.IsotropicGaussian:
  """iid Gaussian with the same average variance as a diagonal Gaussian."""
  std = np.asarray(noise.std_map)
  return noise_lib.gaussian(float(np.sqrt(np.mean(std ** 2))),
                            tuple(std.shape))


def bm3d_denoise(y, sigma: float) -> np.ndarray:
  """BM3D on each image of a batch (B, H, W, C) in [0, 1]-ish values."""
  try:
    import bm3d
  except ImportError:
    raise ImportError("BM3D needs the bm3d package: pip install "
                      "'mapflow[experiments]'") from None
  y = np.asarray(y, np.float64)
  out = np.empty_like(y)
  for i in range(y.shape[0]):
    for c in range(y.shape[-1]):
      out[i, ..., c] = bm3d.bm3d(y[i, ..., c], sigma_psd=float(sigma))
  return out.astype(np.float32)


class ResultTable:
  """Rows keyed by some columns, persisted to CSV after every ``add``.

  ``done(**key)`` says whether a cell is already recorded, so experiment
  loops skip finished work on a rerun.
  """

  def __init__(self, path, columns: Sequence[str], key: Sequence[str]):
    self.path = Path(path)
    self.columns, self.key = list(columns), list(key)
    missing = [k for k in self.key if k not in self.columns]
    if missing:
      raise ValueError(f"key: {missing} are not among columns {self.columns}")
    self.rows: List[Dict[str, str]] = []
    if self.path.is_file():
      with self.path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != self.columns:
          raise ValueError(
              f"{self.path}: has columns {reader.fieldnames}, expected "
              f"{self.columns}; move it away or use another --out")
        self.rows = list(reader)
    self._keys = {self._key_of(r) for r in self.rows}

  def _key_of(self, row) -> tuple:
    return tuple(str(row[k]) for k in self.key)

  def done(self, **key) -> bool:
    return tuple(str(key[k]) for k in self.key) in self._keys

  def add(self, rows: Iterable[dict]):
    """Appends rows (dicts with every column) and rewrites the file."""
    for r in rows:
      extra = set(r) - set(self.columns)
      lacking = set(self.columns) - set(r)
      if extra or lacking:
        raise ValueError(f"row: unexpected {sorted(extra)}, missing "
                         f"{sorted(lacking)}")
      row = {c: _fmt(r[c]) for c in self.columns}
      self.rows.append(row)
      self._keys.add(self._key_of(row))
    self._write()

  def _write(self):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
    w.writeheader()
    w.writerows(self.rows)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.",
                               dir=self.path.parent)
    with os.fdopen(fd, "w", newline="") as f:
      f.write(buf.getvalue())
    os.replace(tmp, self.path)


def _fmt(v):
  if isinstance(v, (float, np.floating)):
    return f"{float(v):.6g}"
  return str(v)


def mean_and_stderr(values) -> Tuple[float, float]:
  """Mean and standard error of the mean."""
  v = np.asarray(values, np.float64)
  if v.size < 2:
    return float(v.mean()), float("nan")
  return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))
