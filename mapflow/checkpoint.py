"""Save and load params (and any pytree) with orbax; configs as JSON.

A checkpoint is a directory:

    config.json     {"type": "RealNVPConfig", "fields": {...}}  (if given)
    arrays/         orbax-checkpoint of the flattened pytree
    meta.json       leaf paths, shapes and dtypes; free-form "extra"

Leaves are stored flat under their pytree path, so a load can compare every
path and shape against the structure the config implies and name the first
that disagrees.  Nothing is unpickled.  Writes go to a sibling temporary
directory that is renamed into place, so an interrupted save never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mapflow import io as io_lib
from mapflow.flows.glow import GlowConfig
from mapflow.flows.linear import LinearGaussianConfig
from mapflow.flows.realnvp import RealNVPConfig
from mapflow.vae import VAEConfig

CONFIG_TYPES = {"RealNVPConfig": RealNVPConfig, "GlowConfig": GlowConfig,
                "LinearGaussianConfig": LinearGaussianConfig,
                "VAEConfig": VAEConfig}


class CheckpointError(ValueError):
  """A checkpoint is missing, corrupt, or does not match what was expected."""


def config_to_json(config) -> dict:
  name = type(config).__name__
  if name not in CONFIG_TYPES:
    raise TypeError(f"config: got {name}, expected one of "
                    f"{sorted(CONFIG_TYPES)}")
  return {"type": name, "fields": dataclasses.asdict(config)}


def config_from_json(d: dict):
  try:
    cls = CONFIG_TYPES[d["type"]]
    fields = dict(d["fields"])
  except (KeyError, TypeError) as e:
    raise CheckpointError(f"config.json: malformed ({e!r}); expected "
                          '{"type": ..., "fields": {...}}') from None
  for k in ("image_shape", "hidden"):
    if k in fields:
      fields[k] = tuple(fields[k])
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise CheckpointError(f"config.json: unknown {d['type']} fields "
                          f"{unknown}; expected some of {sorted(known)}")
  try:
    return cls(**fields)
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"config.json: invalid {d['type']} ({e})") from None


def _digest(a) -> str:
  """sha256 of an array's bytes (C order), with its dtype and shape."""
  a = np.ascontiguousarray(np.asarray(a))
  h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
  h.update(a.tobytes())
  return h.hexdigest()


def _file_sha256(f: Path) -> str:
  h = hashlib.sha256()
  with open(f, "rb") as fh:
    for block in iter(lambda: fh.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _file_digests(folder: Path) -> dict:
  """``{relative POSIX path: sha256}`` of every file under ``folder``."""
  return {f.relative_to(folder).as_posix(): _file_sha256(f)
          for f in sorted(folder.rglob("*")) if f.is_file()}


def _text_digest(text: str) -> str:
  import hashlib
  return hashlib.sha256(text.encode()).hexdigest()


def _flatten(tree) -> tuple[dict, Any]:
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}
  return flat, treedef


def save(path, tree, config=None, extra: Optional[dict] = None) -> Path:
  """Saves a pytree (params, or a whole training state) and its config.

  Args:
    path: the checkpoint directory; replaced if it exists.
    tree: any pytree of arrays.
    config: a flow config (``RealNVPConfig`` or ``GlowConfig``), or None.
    extra: JSON-serialisable metadata kept in ``meta.json``.

  Returns:
    The checkpoint's path.
  """
  import orbax.checkpoint as ocp

  path = Path(path).absolute()
  # What would be replaced must be a checkpoint (or nothing): a save had
  # set aside a file, and emptied a folder of anything else.
  bad = io_lib.file_in_the_way(path)
  if bad is not None:
    raise ValueError(f"path: got {str(path)!r}, " + (
        "which is a file" if bad == path else
        f"under {str(bad)!r}, which is a file") + "; expected a checkpoint "
        "folder (new, or one a save made)")
  if path.is_dir() and any(path.iterdir()) and \
      not (path / "meta.json").is_file():
    raise ValueError(f"path: got {str(path)!r}, a folder that holds other "
                     "things than a mapflow checkpoint (no meta.json); "
                     "expected a new folder or a checkpoint to replace")
  flat, _ = _flatten(tree)
  tmp = io_lib.atomic_dir(path)
  try:
    # Orbax keys must be plain names: index the leaves, map them in meta.json.
    # Closed on the way out, so no background thread outlives a failure.
    with ocp.PyTreeCheckpointer() as ckpt:
      ckpt.save(tmp / "arrays",
                {f"a{i}": v for i, v in enumerate(flat.values())})
    meta = {"leaves": [{"path": k, "shape": list(v.shape),
                        "dtype": str(v.dtype), "sha256": _digest(v)}
                       for k, v in flat.items()],
            "extra": extra or {},
            # Checked before orbax reads them: a damaged file is named, and
            # orbax never starts on bytes that would fail mid-read.
            "files": _file_digests(tmp / "arrays")}
    if config is not None:
      cfg_text = json.dumps(config_to_json(config), indent=2)
      io_lib.write_text_atomic(tmp / "config.json", cfg_text)
      meta["config_sha256"] = _text_digest(cfg_text)
    io_lib.write_json_atomic(tmp / "meta.json", meta)
    io_lib.replace_dir(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def read_meta(path) -> dict:
  path = Path(path)
  if not path.exists():
    aside = sorted(path.parent.glob(f".{path.name}.old-*"))
    if aside:
      raise CheckpointError(
          f"path: {str(path)!r} is missing, and {aside[-1].name} beside it "
          "is the checkpoint a save killed mid-way had set aside; run the "
          "training command again (it puts it back), or rename it")
  if not (path / "meta.json").is_file():
    raise CheckpointError(f"path: {str(path)!r} is not a mapflow checkpoint "
                          "(no meta.json)")
  try:
    return json.loads((path / "meta.json").read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path / 'meta.json'}: corrupt JSON ({e})") from None


def read_config(path):
  """The config saved with a checkpoint, verified against the digest
  ``save`` recorded (an edited config.json is refused)."""
  path = Path(path)
  f = path / "config.json"
  if not f.is_file():
    raise CheckpointError(f"path: {str(path)!r} has no config.json")
  text = f.read_text()
  want = read_meta(path).get("config_sha256")
  if want is not None and _text_digest(text) != want:
    raise CheckpointError(f"{f}: changed since it was saved (its sha256 "
                          "differs from meta.json's); a config must match "
                          "the params saved with it")
  try:
    return config_from_json(json.loads(text))
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{f}: corrupt JSON ({e})") from None
  except CheckpointError as e:
    raise CheckpointError(f"{f}: {e}") from None


def restore(path, target, strict: bool = True):
  """Restores a pytree saved by ``save`` into the structure of ``target``.

  ``target`` may hold arrays or ``jax.ShapeDtypeStruct``s.  Every leaf path
  and shape must agree; the first mismatch is named in the error.  With
  ``strict=False`` the checkpoint may hold more leaves than ``target`` (to
  read the params out of a full training state).
  """
  import orbax.checkpoint as ocp

  path = Path(path).absolute()
  meta = read_meta(path)
  want, treedef = _flatten(jax.tree_util.tree_map(
      lambda a: np.zeros(a.shape, a.dtype), target))
  have = {m["path"]: m for m in meta["leaves"]}
  for k, v in want.items():
    if k not in have:
      raise CheckpointError(f"checkpoint {str(path)!r}: missing leaf {k}; "
                            "the config and the saved params disagree")
    if tuple(have[k]["shape"]) != v.shape:
      raise CheckpointError(
          f"checkpoint {str(path)!r}: leaf {k} has shape "
          f"{tuple(have[k]['shape'])}, expected {v.shape} from the config")
  if strict and len(have) != len(want):
    extra = sorted(set(have) - set(want))[:3]
    raise CheckpointError(f"checkpoint {str(path)!r}: unexpected leaves "
                          f"{extra}; the config and the saved params disagree")
  order = [m["path"] for m in meta["leaves"]]
  for name, digest in meta.get("files", {}).items():
    f = path / "arrays" / name
    if not f.is_file() or _file_sha256(f) != digest:
      raise CheckpointError(
          f"checkpoint {str(path)!r}: arrays/{name} is missing or differs "
          "from the file that was saved (altered or truncated since)")
  try:
    with ocp.PyTreeCheckpointer() as ckpt:
      arrays = ckpt.restore(path / "arrays")
  except Exception as e:  # orbax raises many types; re-raise with context
    raise CheckpointError(f"checkpoint {str(path)!r}: could not read arrays "
                          f"({type(e).__name__}: {e})") from e
  by_path, narrowed = {}, []
  for i, k in enumerate(order):
    if k not in want:
      continue
    a = arrays.get(f"a{i}")
    if a is None or tuple(np.shape(a)) != tuple(have[k]["shape"]):
      raise CheckpointError(f"checkpoint {str(path)!r}: array for {k} is "
                            "missing or truncated")
    digest = have[k].get("sha256")
    if digest is not None and _digest(a) != digest:
      raise CheckpointError(f"checkpoint {str(path)!r}: array {k} (file "
                            f"{path / 'arrays'}) does not match its "
                            "checksum; the file is corrupt")
    # float64 targets come back as float32 when jax_enable_x64 is off:
    # said once, naming the checkpoint, not as JAX's per-array warning.
    dtype = jax.dtypes.canonicalize_dtype(want[k].dtype)
    if dtype != np.dtype(want[k].dtype):
      narrowed.append(k)
    by_path[k] = jnp.asarray(a, dtype=dtype)
  if narrowed:
    warnings.warn(f"checkpoint {str(path)!r}: {len(narrowed)} leaves asked "
                  f"for as 64-bit (first: {narrowed[0]}) are loaded as "
                  "32-bit, since jax_enable_x64 is off", stacklevel=3)
  return jax.tree_util.tree_unflatten(treedef, [by_path[k] for k in want])


def abstract_params(config):
  """Param shapes a config implies, without running the init.  Traced once
  per config and process (about a second for the shipped prior): loading a
  model and checking its params in ``recover`` share the trace."""
  try:
    hash(config)
  except TypeError:  # an unhashable config (e.g. a list field): uncached
    return _abstract_params(config)
  return _cached_abstract_params(config)


@functools.lru_cache(maxsize=32)
def _cached_abstract_params(config):
  return _abstract_params(config)


def _abstract_params(config):
  if isinstance(config, VAEConfig):
    from mapflow import vae
    return jax.eval_shape(lambda k: vae.init(config, k), jax.random.PRNGKey(0))
  from mapflow.flows.presets import from_config
  flow = from_config(config)
  x = jnp.full((1,) + tuple(config.image_shape), 0.5, jnp.float32)
  return jax.eval_shape(flow.init, jax.random.PRNGKey(0), x)


def load(path, key: Optional[str] = None):
  """Loads ``(params, config)`` saved with a model config.

  ``key`` reads the params stored under that top-level key of a larger
  tree, e.g. ``key="params"`` of a training state checkpoint.
  """
  read_meta(path)
  config = read_config(path)
  target = abstract_params(config)
  if key is None:
    return restore(path, target), config
  return restore(path, {key: target}, strict=False)[key], config
