"""Datasets as uint8 arrays of shape (N, H, W, C).

Sources, tried in this order for the names that have several:

* local IDX files (MNIST format), e.g. Debian's ``dataset-fashion-mnist``
  at ``/usr/share/datasets/fashion-mnist``;
* scikit-learn's bundled 8x8 handwritten ``digits`` (optionally resized);
* tensorflow-datasets by name through ``tfds.data_source`` (needs a network
  or a prepared ``data_dir``; TensorFlow itself is not needed);
* a folder of images (``folder:/path/to/dir``).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

DEBIAN_DIRS = {
    "fashion_mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": "/usr/share/datasets/mnist",
}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "celeb_a_hq")
SPLITS = ("train", "test")
# Held-out fraction of scikit-learn's 1797 digits, split by a fixed seed.
DIGITS_TEST_FRACTION = 0.2


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is not available here; the message says how to get it."""


def read_idx(path) -> np.ndarray:
  """Reads an IDX file (optionally gzipped) into a numpy array."""
  path = Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError(f"{path}: not an IDX file (bad magic {data[:4]!r})")
  dtype_code, ndim = data[2], data[3]
  dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4",
            0x0D: ">f4", 0x0E: ">f8"}
  if dtype_code not in dtypes:
    raise ValueError(f"{path}: unknown IDX dtype code {dtype_code:#x}")
  dims = np.frombuffer(data, ">u4", count=ndim, offset=4).astype(int)
  arr = np.frombuffer(data, dtypes[dtype_code], offset=4 + 4 * ndim)
  if arr.size != int(np.prod(dims)):
    raise ValueError(f"{path}: truncated, {arr.size} values for shape "
                     f"{tuple(dims)}")
  return arr.reshape(tuple(dims))


def _find(directory: Path, stem: str) -> Optional[Path]:
  for name in (stem, stem + ".gz"):
    if (directory / name).is_file():
      return directory / name
  return None


def load_idx_dir(directory, split: str, with_labels: bool = False):
  """Loads ``split`` from a directory of MNIST-format IDX files."""
  _check_split(split)
  directory = Path(directory)
  img_stem, lab_stem = IDX_FILES[split]
  img = _find(directory, img_stem)
  if img is None:
    raise DatasetNotFoundError(f"data_dir: no {img_stem}[.gz] in {directory}")
  x = read_idx(img)[..., None].astype(np.uint8)
  if not with_labels:
    return x
  lab = _find(directory, lab_stem)
  if lab is None:
    raise DatasetNotFoundError(f"data_dir: no {lab_stem}[.gz] in {directory}")
  return x, read_idx(lab).astype(np.int64)


def resize(x: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
  """Bilinear resize of a uint8 or float batch (N, H, W, C) to ``size``."""
  import jax
  import jax.numpy as jnp
  out = jax.image.resize(jnp.asarray(x, jnp.float32),
                         (x.shape[0],) + tuple(size) + (x.shape[-1],),
                         "bilinear", antialias=True)
  out = np.asarray(out)
  if x.dtype == np.uint8:
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
  return out


def quantize_bits(x_uint8: np.ndarray, num_bits: int) -> np.ndarray:
  """Keeps the top ``num_bits`` bits, rescaled back to 0..255 steps."""
  if not 1 <= num_bits <= 8:
    raise ValueError(f"num_bits: got {num_bits}, expected 1..8")
  x = np.asarray(x_uint8)
  if not np.issubdtype(x.dtype, np.integer) or (
      x.size and (x.min() < 0 or x.max() > 255)):
    # A cast to uint8 would wrap 300 to 44 and floor 0.5 to 0.
    raise ValueError(f"x_uint8: got {x.dtype} values"
                     + (f" in [{x.min()}, {x.max()}]" if x.size else "")
                     + ", expected 8-bit integers 0..255")
  shift = 8 - num_bits
  return ((x.astype(np.uint8) >> shift) << shift).astype(np.uint8)


def load_digits(split: str, size: Optional[int] = 28, with_labels=False):
  """scikit-learn's 8x8 digits as uint8 (0..255), optionally resized.

  A fixed permutation (seed 0) holds out ``DIGITS_TEST_FRACTION`` as "test".
  """
  _check_split(split)
  if size is not None and (isinstance(size, bool) or not isinstance(
      size, (int, np.integer)) or size < 1):
    raise ValueError(f"size: got {size!r}, expected a positive int (or None "
                     "for the 8x8 originals)")
  from sklearn.datasets import load_digits as sk_digits
  d = sk_digits()
  x = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
  x = x[..., None]
  perm = np.random.RandomState(0).permutation(len(x))
  n_test = int(round(DIGITS_TEST_FRACTION * len(x)))
  idx = perm[:n_test] if split == "test" else perm[n_test:]
  x, y = x[idx], d.target[idx].astype(np.int64)
  if size is not None and size != 8:
    x = resize(x, (size, size))
  return (x, y) if with_labels else x


def load_folder(directory, size: Optional[Tuple[int, int]] = None,
                channels: int = 3) -> np.ndarray:
  """All images in a folder (png/jpg/bmp), sorted by name, as uint8."""
  from PIL import Image
  directory = Path(directory)
  if not directory.is_dir():
    raise DatasetNotFoundError(f"folder: {str(directory)!r} is not a folder")
  files = sorted(p for p in directory.iterdir()
                 if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
  if not files:
    raise DatasetNotFoundError(f"folder: no .png/.jpg/.bmp in {directory}")
  mode = {1: "L", 3: "RGB"}[channels]
  out = []
  for p in files:
    im = Image.open(p).convert(mode)
    if size is not None:
      im = im.resize((size[1], size[0]), Image.BILINEAR)
    a = np.asarray(im, np.uint8)
    out.append(a[..., None] if a.ndim == 2 else a)
  shapes = {a.shape for a in out}
  if len(shapes) > 1:
    raise ValueError(f"folder: images of several sizes {sorted(shapes)}; "
                     "pass size=(H, W)")
  return np.stack(out)


def load_npz_array(path, name: str) -> np.ndarray:
  """The array ``name`` of an .npz file, or its only array."""
  with np.load(path) as f:
    names = list(f.files)
    if name not in names and len(names) != 1:
      raise ValueError(f"path: {path} holds arrays {names}; expected one "
                       f"named {name!r} (or a single array)")
    return np.asarray(f[name if name in names else names[0]])


def load_examples(path, channels: Optional[int] = None) -> np.ndarray:
  """Examples a user brings, as uint8 (N, H, W, C): a folder of images
  (png/jpg/bmp; grey unless ``channels=3``), an IDX file (as MNIST's), or
  an ``.npz`` whose array is named ``x`` (or is its only one), uint8 or
  floats in [0, 1] (rounded to 8 bits)."""
  path = Path(path)
  if path.is_dir():
    return load_folder(path, channels=channels or 1)
  if not path.is_file():
    raise DatasetNotFoundError(f"path: {str(path)!r} is neither a folder nor "
                               "a file")
  if path.suffix == ".npz":
    a = load_npz_array(path, "x")
  else:
    a = read_idx(path)
  if a.ndim == 3:
    a = a[..., None]
  if a.ndim != 4:
    raise ValueError(f"path: {path} holds an array of shape {a.shape}, "
                     "expected (N, H, W) or (N, H, W, C)")
  if a.dtype == np.uint8:
    return a
  a = np.asarray(a, np.float64)
  if not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0:
    raise ValueError(f"path: {path} holds {a.dtype} values in "
                     f"[{np.nanmin(a):.3g}, {np.nanmax(a):.3g}], expected "
                     "uint8 or finite floats in [0, 1]")
  return np.round(a * 255.0).astype(np.uint8)


def load_tfds(name: str, split: str, data_dir=None, with_labels=False):
  """A tfds dataset through ``tfds.data_source`` (no TensorFlow needed)."""
  _check_split(split)
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise DatasetNotFoundError(
        f"{name}: tensorflow-datasets is not installed; pip install "
        "'mapflow[data]'") from None
  try:
    src = tfds.data_source(name, split=split, data_dir=data_dir)
    records = [src[i] for i in range(len(src))]
  except Exception as e:  # tfds raises many types for a missing dataset
    raise DatasetNotFoundError(
        f"{name}: tfds could not provide split {split!r} ({type(e).__name__}: "
        f"{e}). With a network, tfds downloads it; offline, pass data_dir= "
        "a prepared tfds directory" + _hint(name)) from e
  x = np.stack([np.asarray(r["image"]) for r in records]).astype(np.uint8)
  if x.ndim == 3:
    x = x[..., None]
  if not with_labels:
    return x
  return x, np.asarray([int(r.get("label", -1)) for r in records])


def _hint(name):
  if name in DEBIAN_DIRS:
    return (f", or install IDX files (Debian: apt-get install "
            f"dataset-{name.replace('_', '-')}) and pass data_dir=")
  return ""


def _check_split(split):
  if split not in SPLITS:
    raise ValueError(f"split: got {split!r}, expected one of {SPLITS}")


def load(name: str, split: str = "train", data_dir=None,
         with_labels: bool = False):
  """Loads a dataset by name as uint8 (N, H, W, C).

  Args:
    name: "fashion_mnist", "mnist", "cifar10", "celeb_a_hq" (tfds, or local
      IDX files for the first two), "digits" (scikit-learn, resized to
      28x28), "digits8" (native 8x8), or "folder:/path".
    split: "train" or "test".
    data_dir: a directory of IDX files (MNIST-like names) or a tfds data_dir.
    with_labels: also return integer labels.
  """
  _check_split(split)
  if data_dir is not None and not Path(data_dir).is_dir():
    raise DatasetNotFoundError(f"data_dir: got {str(data_dir)!r}, which is "
                               "not a directory")
  if name.startswith("folder:"):
    if with_labels:
      raise ValueError("with_labels: folders have no labels")
    return load_folder(name[len("folder:"):])
  if name == "digits":
    return load_digits(split, 28, with_labels)
  if name == "digits8":
    return load_digits(split, None, with_labels)
  if name in DEBIAN_DIRS:
    # A data_dir given is the only place looked at (then as a tfds one).
    for d in [data_dir] if data_dir else [DEBIAN_DIRS[name]]:
      if d and _find(Path(d), IDX_FILES[split][0]) is not None:
        return load_idx_dir(d, split, with_labels)
  if name in TFDS_NAMES:
    return load_tfds(name, split, data_dir, with_labels)
  raise ValueError(f"name: got {name!r}, expected one of "
                   f"{sorted(set(TFDS_NAMES) | {'digits', 'digits8'})} or "
                   "'folder:/path'")


def ood_images(size: int = 28):
  """Out-of-distribution test images for a Fashion-MNIST prior, offline.

  Returns ``(x, names)``: ``x`` uint8 (6, size, size, 1), grey:
  three held-out scikit-learn digits (the first three of its "test"
  split), the two photographs bundled with scikit-learn (``china``,
  ``flower``; centre square crop, bilinear down-sampling) and a flat
  cartoon-like image (a disc and a bar on a mid-grey ground).
  """
  from PIL import Image
  from sklearn.datasets import load_sample_images
  digits = load_digits("test", size)[:3]
  photos = []
  for im in load_sample_images().images:
    h, w = im.shape[:2]
    k = min(h, w)
    crop = im[(h - k) // 2:(h - k) // 2 + k, (w - k) // 2:(w - k) // 2 + k]
    grey = np.asarray(Image.fromarray(crop).convert("L"))[None, ..., None]
    photos.append(resize(grey, (size, size))[0])
  u = (np.arange(size) + 0.5) / size
  yy, xx = np.meshgrid(u, u, indexing="ij")
  cartoon = np.full((size, size), 110.0)
  cartoon[(yy - 0.4) ** 2 + (xx - 0.4) ** 2 < 0.22 ** 2] = 235.0
  cartoon[(yy > 0.7) & (yy < 0.85) & (xx > 0.15) & (xx < 0.9)] = 20.0
  x = np.concatenate([digits, np.stack(photos),
                      cartoon.astype(np.uint8)[None, ..., None]])
  names = ["digit0", "digit1", "digit2", "china", "flower", "cartoon"]
  return x, names


def demo_images():
  """The shipped demo images: 8 Fashion-MNIST test images (from the
  protocol's reported set) and 8 held-out scikit-learn digits at 28x28,
  both uint8 (8, 28, 28, 1), with their indices."""
  path = Path(__file__).parent / "assets" / "demo_images.npz"
  with np.load(path) as z:
    return {k: z[k] for k in z.files}
