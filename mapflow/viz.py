"""Image grids as PNG, with Pillow only (no matplotlib needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def image_grid(images, ncols: int = 8, pad: int = 1) -> np.ndarray:
  """Tiles (N, H, W, C) images in [0, 1] into one uint8 (H', W', C) array
  (a NaN pixel is drawn black)."""
  a = np.asarray(images)
  if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
    # 8-bit images clipped to [0, 1] had come out all white.
    raise ValueError(f"images: got {a.dtype} values, expected floats in "
                     "[0, 1] (divide 8-bit images by 255)")
  if a.ndim != 4:
    raise ValueError(f"images: got shape {a.shape}, expected (N, H, W, C)")
  with np.errstate(invalid="ignore"):
    x = np.nan_to_num(np.clip(a.astype(np.float32), 0.0, 1.0), nan=0.0)
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


def _pil_image(array_uint8, scale: int = 1):
  from PIL import Image
  a = np.asarray(array_uint8)
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  im = Image.fromarray(a)
  if scale != 1:
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
  return im


def _save_image(path, im) -> Path:
  from mapflow.io import write_via
  return write_via(Path(path), lambda tmp: im.save(tmp, format="PNG"),
                   suffix=".png")


def save_png(path, array_uint8, scale: int = 1) -> Path:
  """Writes a uint8 (H, W[, C]) array as PNG, atomically."""
  return _save_image(path, _pil_image(array_uint8, scale))


def save_grid(path, images, ncols: int = 8, scale: int = 2) -> Path:
  """Saves images in [0, 1] as one PNG grid."""
  return save_png(path, image_grid(images, ncols), scale)


def save_labelled_grid(path, images, ncols: int, col_labels=(),
                       row_labels=(), scale: int = 2, pad: int = 1) -> Path:
  """Saves images in [0, 1] as one PNG grid, with ``col_labels[j]`` above
  column j and ``row_labels[i]`` left of row i (an empty label leaves its
  place blank; either may be shorter than the grid)."""
  from PIL import Image, ImageDraw, ImageFont
  images = np.asarray(images)
  n, h, w = images.shape[:3]
  ncols = max(1, min(ncols, n))
  for name, labels, most in (("col_labels", col_labels, ncols),
                             ("row_labels", row_labels, -(-n // ncols))):
    if len(labels) > most:
      raise ValueError(f"{name}: got {len(labels)} labels for {most} "
                       f"{'columns' if name == 'col_labels' else 'rows'}")
  tiles = _pil_image(image_grid(images, ncols, pad), scale).convert("RGB")
  font = ImageFont.load_default()
  measure = ImageDraw.Draw(tiles).textbbox
  size = lambda t: measure((0, 0), t, font=font)[2:]
  gap = 4
  top = (max(size(t)[1] for t in col_labels) + 2 * gap
         if any(col_labels) else 0)
  left = (max(size(t)[0] for t in row_labels) + 2 * gap
          if any(row_labels) else 0)
  canvas = Image.new("RGB", (left + tiles.width, top + tiles.height),
                     "white")
  canvas.paste(tiles, (left, top))
  draw = ImageDraw.Draw(canvas)
  for j, text in enumerate(col_labels):
    centre = left + (pad + j * (w + pad) + w / 2) * scale
    draw.text((centre - size(text)[0] / 2, gap), text, fill="black",
              font=font)
  for i, text in enumerate(row_labels):
    middle = top + (pad + i * (h + pad) + h / 2) * scale
    draw.text((left - gap - size(text)[0], middle - size(text)[1] / 2),
              text, fill="black", font=font)
  return _save_image(path, canvas)
