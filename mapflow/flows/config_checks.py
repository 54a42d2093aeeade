"""Construction-time checks shared by the flow configs."""

from __future__ import annotations

import numpy as np


def check_image_shape(name: str, image_shape) -> tuple:
  try:
    shape = tuple(image_shape)
  except TypeError:
    shape = ()
  if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
    raise ValueError(f"{name}.image_shape: got {image_shape!r}, expected "
                     "(height, width, channels) of positive ints")
  return shape


def check_positive(name: str, **values):
  for key, v in values.items():
    if not isinstance(v, int) or v < 1:
      raise ValueError(f"{name}.{key}: got {v!r}, expected an int >= 1")


def check_squeezable(name: str, shape, times: int, what: str):
  h, w, _ = shape
  f = 2 ** times
  if h % f or w % f:
    raise ValueError(
        f"{name}.image_shape: got {shape[0]}x{shape[1]}, but {what} needs "
        f"{times} 2x2 squeezes, so height and width must be multiples of {f}")


def check_num_bits(name: str, num_bits):
  if not isinstance(num_bits, int) or not 1 <= num_bits <= 8:
    raise ValueError(f"{name}.num_bits: got {num_bits!r}, expected 1..8")


def check_switches(name: str, **values):
  """Options that are on, off or (None) the backend's default: a string
  such as 'no' would read as on."""
  for key, v in values.items():
    if v is not None and not isinstance(v, (bool, np.bool_)):
      raise ValueError(f"{name}.{key}: got {v!r}, expected True, False or "
                       "None")
