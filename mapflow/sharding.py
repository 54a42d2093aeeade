"""Data parallelism over devices: a 1-D mesh whose one axis is ``"batch"``.

Recovery problems are independent per example, and a training step averages
over its batch, so both split the example axis across devices and replicate
everything else (flow params, operator, noise model).  One device gives a
1-device mesh and runs the same code.

Multi-host: after ``jax.distributed.initialize()``, pass
``devices=jax.local_devices()`` so each process recovers its own examples
(no communication is needed between examples).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH = "batch"


def batch_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A mesh over ``devices`` (default: all of ``jax.devices()``)."""
  devs = list(jax.devices() if devices is None else devices)
  if not devs:
    raise ValueError("devices: got an empty list, expected at least one")
  return Mesh(np.asarray(devs), (BATCH,))


def replicate(tree, mesh: Mesh):
  """Every array leaf of ``tree`` copied to every device of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def along(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """The sharding that splits ``axis`` over the mesh's devices."""
  return NamedSharding(mesh, PartitionSpec(*([None] * axis + [BATCH])))


def shard_along(a, mesh: Mesh, axis: int = 0):
  """``a`` split along ``axis`` (its size a multiple of the mesh size)."""
  return jax.device_put(a, along(mesh, axis))


def pad_along(a, multiple: int, axis: int = 0) -> Tuple[jax.Array, int]:
  """Pads ``axis`` to a multiple of ``multiple`` by repeating its last
  entry; returns ``(padded, how many were added)``.  Padded examples are
  whole extra problems, dropped afterwards; they never mix with real ones."""
  n = a.shape[axis]
  pad = (-n) % multiple
  if pad == 0:
    return a, 0
  last = jax.lax.slice_in_dim(a, n - 1, n, axis=axis)
  reps = jnp.repeat(last, pad, axis=axis)
  return jnp.concatenate([a, reps], axis=axis), pad
