"""Image grids as PNG, with Pillow only (no matplotlib needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def image_grid(images, ncols: int = 8, pad: int = 1) -> np.ndarray:
  """Tiles (N, H, W, C) images in [0, 1] into one uint8 (H', W', C) array."""
  x = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = x.shape
  ncols = max(1, min(ncols, n))
  nrows = -(-n // ncols)
  grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c),
                 np.float32)
  for i in range(n):
    r, q = divmod(i, ncols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + q * (w + pad):pad + q * (w + pad) + w] = x[i]
  return np.round(grid * 255).astype(np.uint8)


def save_png(path, array_uint8, scale: int = 1) -> Path:
  """Writes a uint8 (H, W[, C]) array as PNG, atomically."""
  from PIL import Image
  a = np.asarray(array_uint8)
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  im = Image.fromarray(a)
  if scale != 1:
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
  from mapflow.checkpoint import atomic_temp
  path = Path(path)
  fd, tmp = atomic_temp(path, suffix=".png")
  os.close(fd)
  im.save(tmp)
  os.replace(tmp, path)
  return path


def save_grid(path, images, ncols: int = 8, scale: int = 2) -> Path:
  """Saves images in [0, 1] as one PNG grid."""
  return save_png(path, image_grid(images, ncols), scale)
