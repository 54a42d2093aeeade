"""Per-cell figures: truth | measurement | each method, titled.

Each method's recoveries of the rows a figure shows are kept as 8-bit
images (``figures/shown/CELL_METHOD.npz``), so a later run that adds a
method redraws the figure with every method recorded in the folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from mapflow import io as io_lib


def shown_rows(n_test: int, n_all: int, per_part: int = 6):
  """Rows a cell's figure shows: the first test images and every
  out-of-distribution image."""
  return list(range(min(per_part, n_test))) + list(range(n_test, n_all))


def cell_name(experiment, setting) -> str:
  return f"{experiment}_{setting}".replace("=", "").replace(",", "_")


def _shown_path(out, experiment, setting, method) -> Path:
  return (Path(out) / "figures" / "shown" /
          f"{cell_name(experiment, setting)}_{method}.npz")


def keep_shown(out, experiment, setting, method, x_hat, n_test):
  """A method's recoveries of the figure's rows, as 8-bit images (what the
  PNG shows), kept on disk; returns them as floats."""
  x_hat = np.asarray(x_hat)
  rows = np.clip(x_hat[shown_rows(n_test, len(x_hat))], 0.0, 1.0)
  u8 = np.round(rows * 255.0).astype(np.uint8)
  io_lib.write_npz_atomic(_shown_path(out, experiment, setting, method),
                          images=u8)
  return u8.astype(np.float32) / 255.0


def _drawn_path(out, experiment, setting) -> Path:
  return (Path(out) / "figures" / "shown" /
          f"{cell_name(experiment, setting)}.drawn.json")


def kept_digests(out, experiment, setting, methods) -> Dict[str, str]:
  """SHA-256 of each of ``methods``' kept 8-bit images (shape and bytes),
  for the methods that have some."""
  digests = {}
  for m in methods:
    path = _shown_path(out, experiment, setting, m)
    if path.is_file():
      with np.load(path) as f:
        u8 = np.ascontiguousarray(f["images"])
      h = hashlib.sha256(repr(u8.shape).encode())
      h.update(u8.tobytes())
      digests[m] = h.hexdigest()
  return digests


def figure_is_stale(out, experiment, setting, methods) -> bool:
  """Whether the cell's PNG is missing or shows other images than the
  methods' kept ones (a run killed between keeping them and drawing it).
  The PNG records what it drew (``.drawn.json``), so a fresh checkout,
  whose files' times are arbitrary, redraws nothing; a PNG drawn before
  that record existed is stale if older than some kept images."""
  png = Path(out) / "figures" / f"{cell_name(experiment, setting)}.png"
  kept = kept_digests(out, experiment, setting, methods)
  if not kept:
    return False
  if not png.is_file():
    return True
  drawn = _drawn_path(out, experiment, setting)
  if drawn.is_file():
    # Methods drawn but not asked about (another run's) do not matter.
    record = json.loads(drawn.read_text())
    return any(record.get(m) != h for m, h in kept.items())
  times = [_shown_path(out, experiment, setting, m).stat().st_mtime_ns
           for m in kept]
  return png.stat().st_mtime_ns < max(times)


def record_drawn(out, experiment, setting, methods):
  """Records the kept images the cell's PNG now shows (after drawing it)."""
  io_lib.write_json_atomic(_drawn_path(out, experiment, setting),
                           kept_digests(out, experiment, setting, methods))


def copy_shown(out, experiment, setting, source, method):
  """``source``'s kept images kept as ``method``'s too (the same
  recoveries); returns them as floats, or None if ``source`` has none."""
  path = _shown_path(out, experiment, setting, source)
  if not path.is_file():
    return None
  with np.load(path) as f:
    u8 = f["images"]
  io_lib.write_npz_atomic(_shown_path(out, experiment, setting, method),
                          images=u8)
  return u8.astype(np.float32) / 255.0


def load_shown(out, experiment, setting, method):
  path = _shown_path(out, experiment, setting, method)
  if not path.is_file():
    return None
  with np.load(path) as f:
    return f["images"].astype(np.float32) / 255.0


def y_shown(op, y, image_shape):
  """What a figure shows as the measurement: y itself for image-shaped
  measurements, the back-projection otherwise (1-bit CS)."""
  import jax.numpy as jnp
  from mapflow import solve
  y = jnp.asarray(y)
  if y.ndim == 4:
    return jnp.clip(op.back_project(y), 0.0, 1.0)
  return solve.measurement_init(y, op, image_shape, 0.0, 1.0)


def save_cell_figure(out, experiment: str, setting: str, x, y,
                     shown: Dict[str, np.ndarray], methods: Sequence[str],
                     row_labels=()):
  """PNG of truth | measurement | each of ``methods`` found in ``shown``
  (columns, titled) for the rows of ``x`` and ``y``, named by
  ``row_labels``; a ``.txt`` beside it names the columns."""
  from mapflow import viz
  methods = [m for m in methods if m in shown]
  cols = [np.asarray(x), np.clip(np.asarray(y), 0, 1)] + [
      np.clip(shown[m], 0, 1) for m in methods]
  if len({c.shape for c in cols}) != 1:
    raise ValueError(f"figure {experiment} {setting}: columns of shapes "
                     f"{[c.shape for c in cols]} (a kept method's images "
                     "are from a run with other image counts; delete "
                     f"{Path(out) / 'figures' / 'shown'})")
  grid = np.stack(cols, axis=1)
  name = cell_name(experiment, setting)
  titles = ["truth", "measurement"] + list(methods)
  viz.save_labelled_grid(Path(out) / "figures" / f"{name}.png",
                         grid.reshape((-1,) + grid.shape[2:]),
                         ncols=len(cols), col_labels=titles,
                         row_labels=list(row_labels), scale=3)
  io_lib.write_text_atomic(Path(out) / "figures" / f"{name}.txt",
                           "columns: " + ", ".join(titles) + "\n")
  record_drawn(out, experiment, setting, methods)
