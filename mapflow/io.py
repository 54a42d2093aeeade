"""Files that are never seen half-written, and folders one writer at a time.

* ``atomic_temp`` / ``write_text_atomic`` / ``write_json_atomic`` /
  ``write_csv_atomic`` / ``write_npz_atomic``: the content goes to a
  temporary file beside the target, which ``os.replace`` then renames over
  it.  Readers (and a process killed mid-write) see the old file or the new
  one, never a torn one.
* ``FolderLock``: an exclusive lock on a folder (results, a training
  workdir).  A second process is refused with a message that names the
  holder; a lock left by a killed process is taken over.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable, Sequence


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# mkstemp/mkdtemp make private (0600/0700) files; results and checkpoints
# get the usual permissions instead.  Read once, at import (not thread-safe).
UMASK = _umask()


def atomic_temp(path, suffix: str = ""):
  """``(fd, tmp)``: a temporary file beside ``path`` (its folder made if
  need be) with the usual permissions, to be renamed over ``path`` with
  ``os.replace`` once written."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix,
                             dir=path.parent)
  os.fchmod(fd, 0o666 & ~UMASK)
  return fd, tmp


def atomic_dir(path) -> Path:
  """A temporary folder beside ``path`` with the usual permissions, to be
  renamed into place once filled."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
  os.chmod(tmp, 0o777 & ~UMASK)
  return tmp


def write_bytes_atomic(path, data: bytes) -> Path:
  fd, tmp = atomic_temp(path)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    _remove_quietly(tmp)
    raise
  return Path(path)


def write_via(path, write: Callable[[str], None], suffix: str = ""
              ) -> Path:
  """``write(tmp)`` fills a temporary file beside ``path`` (for writers
  that want a file name, e.g. PIL), which then replaces ``path``."""
  fd, tmp = atomic_temp(path, suffix=suffix)
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    _remove_quietly(tmp)
    raise
  return Path(path)


def _olds(path: Path):
  return sorted(path.parent.glob(f".{path.name}.old-*"),
                key=lambda p: p.stat().st_mtime)


def recover_dir(path) -> bool:
  """Puts back a folder that ``replace_dir`` had moved aside when its
  process was killed between its two renames; True if it did."""
  path = Path(path)
  if path.exists():
    return False
  olds = [p for p in _olds(path) if p.is_dir()]
  if not olds:
    return False
  os.replace(olds[-1], path)
  return True


def replace_dir(tmp, path) -> Path:
  """Moves the filled folder ``tmp`` (from ``atomic_dir``) to ``path``,
  replacing any folder there.  Two renames: the old folder aside, the new
  one in.  A kill between them leaves the old one beside ``path``, which
  ``recover_dir`` (called here and by readers) puts back."""
  path = Path(path)
  recover_dir(path)
  old = None
  if path.exists():
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.replace(path, old)
  os.replace(tmp, path)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
  return path


def remove_orphan_dirs(path) -> int:
  """Deletes the temporary and set-aside folders of ``path`` that killed
  writers left (``.NAME.tmp-*``, and ``.NAME.old-*`` once ``path`` is
  back).  Only while holding the folder's lock; returns how many."""
  path = Path(path)
  recover_dir(path)
  n = 0
  for p in list(path.parent.glob(f".{path.name}.tmp-*")) + (
      _olds(path) if path.exists() else []):
    shutil.rmtree(p, ignore_errors=True)
    n += 1
  return n


def write_text_atomic(path, text: str) -> Path:
  """Writes ``text`` to ``path`` via a temporary file and ``os.replace``."""
  return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj) -> Path:
  """Writes JSON to ``path`` via a temporary file and ``os.replace``."""
  return write_text_atomic(path, json.dumps(obj, indent=2))


def write_csv_atomic(path, rows: Sequence[dict], columns: Sequence[str]):
  """Writes ``rows`` (dicts keyed by ``columns``) as CSV, atomically."""
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
  w.writeheader()
  w.writerows(rows)
  return write_text_atomic(path, buf.getvalue())


def write_npz_atomic(path, **arrays) -> Path:
  """``numpy.savez_compressed`` to ``path``, atomically."""
  import numpy as np
  buf = io.BytesIO()
  np.savez_compressed(buf, **arrays)
  return write_bytes_atomic(path, buf.getvalue())


def remove_orphans(folder, names: Sequence[str]) -> int:
  """Deletes the temporary files ``atomic_temp`` made for ``names`` in
  ``folder`` and a killed writer left behind; returns how many.  Call it
  only while holding the folder's ``FolderLock`` (a live writer's
  temporary looks the same)."""
  n = 0
  folder = Path(folder)
  for name in names:
    for p in folder.glob(f".{name}.*"):
      if p.is_file():
        _remove_quietly(p)
        n += 1
  return n


def _remove_quietly(p):
  try:
    os.unlink(p)
  except OSError:
    pass


class LockedError(RuntimeError):
  """Another live process holds the folder's lock."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except OSError as e:
    return e.errno == errno.EPERM
  return True


class FolderLock:
  """``with FolderLock(folder, what="--out"):`` one writer per folder.

  The lock is a file ``.lock`` holding ``host pid``, made with ``O_EXCL``.
  A lock whose process is gone (same host, pid not alive) is stale and is
  taken over; a live one raises ``LockedError`` naming the holder.  Locks
  made on another host are never taken over (their pid means nothing here).
  """

  NAME = ".lock"

  def __init__(self, folder, what: str = "folder"):
    self.folder = Path(folder)
    self.path = self.folder / self.NAME
    self.what = what
    self._held = False

  def acquire(self) -> "FolderLock":
    self.folder.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}\n"
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._holder()
        if holder is None:
          continue  # released between our open and our read
        host, pid = holder
        torn = pid is None and self._age() > 5.0  # killed mid-write
        if torn or (host == socket.gethostname() and pid is not None and (
            pid == os.getpid() or not _alive(pid))):
          # Stale (its process was killed), or our own from a crash that
          # skipped release: take it over.
          _remove_quietly(self.path)
          continue
        raise LockedError(
            f"{self.what}: {self.folder} is in use by process {pid} on "
            f"{host} (lock file {self.path}); wait for it to finish, or "
            "use another folder.  If that process is gone, delete the lock "
            "file.") from None
      with os.fdopen(fd, "w") as f:
        f.write(me)
      self._held = True
      return self
    raise LockedError(f"{self.what}: could not take the lock {self.path}")

  def _holder(self):
    try:
      text = self.path.read_text().split()
    except FileNotFoundError:
      return None
    if len(text) != 2:
      return ("?", None)
    try:
      return text[0], int(text[1])
    except ValueError:
      return text[0], None

  def _age(self) -> float:
    import time
    try:
      return time.time() - self.path.stat().st_mtime
    except FileNotFoundError:
      return 0.0

  def release(self):
    if self._held:
      _remove_quietly(self.path)
      self._held = False

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False
