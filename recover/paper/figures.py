"""Per-cell figures: truth | measurement | each method, titled.

Each method's recoveries of the rows a figure shows are kept as 8-bit
images (``figures/shown/CELL_METHOD.npz``), so a later run that adds a
method redraws the figure with every method recorded in the folder.
"""

from __future__ import annotations

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


def figure_is_stale(out, experiment, setting, methods) -> bool:
  """Whether the cell's PNG is missing or older than some method's kept
  images (a run killed between keeping them and drawing it)."""
  png = Path(out) / "figures" / f"{cell_name(experiment, setting)}.png"
  kept = [_shown_path(out, experiment, setting, m) for m in methods]
  kept = [k.stat().st_mtime_ns for k in kept if k.is_file()]
  if not kept:
    return False
  return not png.is_file() or png.stat().st_mtime_ns < max(kept)


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
