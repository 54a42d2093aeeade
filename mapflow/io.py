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
import io
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence


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
  process was killed between its two renames; True if it did.  Only for
  the folder's writer (a lock holder): a reader could race a live save."""
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
  ``recover_dir`` (called here, and by writers when they start) puts
  back."""
  path = Path(path)
  recover_dir(path)
  old = None
  if path.exists():
    import uuid
    old = path.with_name(f".{path.name}.old-{os.getpid()}-"
                         f"{uuid.uuid4().hex[:8]}")
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


def file_in_the_way(path) -> Optional[Path]:
  """The first of ``path`` and its parents that exists and is not a
  folder (a writer could not make ``path`` a folder there), else None."""
  for p in (Path(path), *Path(path).parents):
    if p.exists() and not p.is_dir():
      return p
  return None


class LockedError(RuntimeError):
  """Another live process holds the folder's lock."""


class FolderLock:
  """``with FolderLock(folder, what="--out"):`` one writer per folder.

  The lock is an exclusive ``flock`` on the file ``.lock`` (which names
  its holder, ``host pid``).  The kernel drops the lock when its process
  ends, however it ends, so a killed writer never leaves a stale lock; a
  live holder makes ``acquire`` raise ``LockedError`` naming it.  Each
  ``FolderLock`` object is its own writer, even within one process.
  """

  NAME = ".lock"

  def __init__(self, folder, what: str = "folder"):
    self.folder = Path(folder)
    self.path = self.folder / self.NAME
    self.what = what
    self._fd = None

  def acquire(self) -> "FolderLock":
    import fcntl
    self.folder.mkdir(parents=True, exist_ok=True)
    for _ in range(10):
      fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        holder = self._holder()
        os.close(fd)
        raise LockedError(
            f"{self.what}: {self.folder} is in use by {holder} (lock file "
            f"{self.path}); wait for it to finish, or use another folder"
            ) from None
      # The file may have been unlinked by a holder releasing it between
      # our open and our lock: then our lock guards nothing; try again.
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if not same:
        os.close(fd)
        continue
      os.ftruncate(fd, 0)
      os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
      self._fd = fd
      return self
    raise LockedError(f"{self.what}: could not take the lock {self.path}")

  def _holder(self) -> str:
    try:
      text = self.path.read_text().split()
    except OSError:
      text = []
    if len(text) == 2:
      return f"process {text[1]} on {text[0]}"
    return "another process"

  def release(self):
    if self._fd is not None:
      # Unlinked while still locked, so no one locks a file on its way out.
      _remove_quietly(self.path)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False
