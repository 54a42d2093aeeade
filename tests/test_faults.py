"""Faults injected into running experiments: SIGKILL at random moments, a
second process on the same folder, and a lock left by a killed process."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mapflow import io
from recover.paper import tables

ROOT = Path(__file__).resolve().parents[1]


def _command(prior, out, methods="ours,asim"):
  return [sys.executable, "-m", "recover.sinusoidal", "--out", str(out),
          "--prior", prior, "--inits", "zeros:2,measurements:2",
          "--num-val", "2", "--num-test", "2", "--scales", "0.1,0.4",
          "--methods", methods, "--no-ood", "--no-figures"]


def _start(cmd):
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def _wait_for_lock(proc, out):
  while not (out / ".lock").exists() and proc.poll() is None:
    time.sleep(0.02)
  return time.time()


def _holds_lock(proc, out) -> bool:
  """Waits until the lock file names ``proc`` (written once the lock is
  taken); False if it ended first."""
  while proc.poll() is None:
    try:
      if (out / ".lock").read_text().split()[1:2] == [str(proc.pid)]:
        return True
    except (FileNotFoundError, IndexError):
      pass
    time.sleep(0.005)
  return False


def _rows(folder, name, key):
  rows = tables.read_rows(folder / name)
  keys = [tuple(r[k] for k in key) for r in rows]
  assert len(keys) == len(set(keys)), f"{name}: a key recorded twice"
  return {k: r for k, r in zip(keys, rows)}


# With ours_heldout, kills land in the blind selection's re-scoring too
# (about 80 s on an AVX2-only 2-core CPU): -m slow.  The stub test
# test_blind_selection_killed_anywhere_resumes_on_the_same_path kills it
# after every fit in the default run.
@pytest.mark.parametrize("methods", [
    "ours,asim",
    pytest.param("ours,ours_heldout,asim", marks=pytest.mark.slow)])
def test_sigkill_loses_and_duplicates_nothing_and_one_writer_at_a_time(
    tiny_prior, tmp_path, methods):
  _command_m = lambda prior, out: _command(prior, out, methods)
  ref = tmp_path / "ref"
  proc = _start(_command_m(tiny_prior, ref))
  t0 = _wait_for_lock(proc, ref)
  assert proc.wait(timeout=300) == 0, proc.stderr.read()
  full = time.time() - t0  # from taking the lock to the end

  out = tmp_path / "faulted"
  rng = random.Random(0)
  kills = 0
  for attempt in range(2):
    proc = _start(_command_m(tiny_prior, out))
    t0 = _wait_for_lock(proc, out)
    deadline = t0 + rng.uniform(0.1, 0.8) * full
    if attempt == 0:
      # A second writer on the same folder is refused, naming the holder.
      # The holder is paused meanwhile: a fast run could otherwise finish
      # (and free the folder) while the second one starts up.
      assert _holds_lock(proc, out), proc.stderr.read()
      stopped = time.time()
      os.kill(proc.pid, signal.SIGSTOP)
      other = None
      try:
        other = _start(_command_m(tiny_prior, out))
        assert other.wait(timeout=120) != 0
        assert f"in use by process {proc.pid}" in other.stderr.read()
      finally:
        os.kill(proc.pid, signal.SIGCONT)
        if other is not None and other.poll() is None:
          other.kill()
      deadline += time.time() - stopped
    time.sleep(max(0.0, deadline - time.time()))
    killed = proc.poll() is None
    if killed:
      os.kill(proc.pid, signal.SIGKILL)
      proc.wait()
      kills += 1
  assert kills >= 1
  # A killed last attempt leaves its lock file; one that finished first (a
  # resumed run has less to do) removed it on the way out.
  assert (out / ".lock").exists() == killed
  proc = _start(_command_m(tiny_prior, out))
  assert proc.wait(timeout=300) == 0, proc.stderr.read()  # stale lock taken

  # ours_heldout's recorrupted draws too: raw error estimates (~1e-3),
  # compared relatively.
  blind = "ours_heldout" in methods
  for name, key, col, tol in (
      ("results.csv", tables.RESULT_KEY, "psnr", dict(abs=1e-3)),
      ("selection.csv", tables.SELECTION_KEY, "val_score", dict(abs=1e-3)),
      (tables.DRAWS_FILE, tables.DRAWS_KEY, "est_error", dict(rel=1e-3))):
    if name == tables.DRAWS_FILE and not blind:
      continue
    want, got = _rows(ref, name, key), _rows(out, name, key)
    assert want, name  # the run wrote some
    assert set(got) == set(want), name
    for k in want:
      assert float(got[k][col]) == pytest.approx(float(want[k][col]),
                                                 **tol), (name, k)
  assert blind == any(k[2] == "ours_heldout" for k in _rows(
      out, "selection.csv", tables.SELECTION_KEY))
  leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
  assert leftovers == [], leftovers


def test_folder_lock_refuses_a_live_holder_and_frees_a_dead_ones(tmp_path):
  """A second writer is refused, naming the holder; a holder killed with
  SIGKILL leaves no lock behind (the kernel drops it with the process)."""
  first = io.FolderLock(tmp_path, what="--out").acquire()
  with pytest.raises(io.LockedError, match=f"--out: .* is in use by process "
                     f"{os.getpid()} on"):
    io.FolderLock(tmp_path, what="--out").acquire()
  first.release()
  assert not (tmp_path / ".lock").exists()
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from mapflow import io; "
       f"io.FolderLock({str(tmp_path)!r}).acquire(); print('held', "
       "flush=True); time.sleep(60)"], cwd=ROOT, stdout=subprocess.PIPE,
      text=True)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(io.LockedError, match=f"process {holder.pid}"):
    io.FolderLock(tmp_path).acquire()
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  assert (tmp_path / ".lock").exists()  # the file stays, the lock does not
  with io.FolderLock(tmp_path):
    assert (tmp_path / ".lock").read_text().split()[1] == str(os.getpid())
  assert not (tmp_path / ".lock").exists()


def test_a_save_killed_between_its_renames_is_put_back(tmp_path):
  """``replace_dir`` moves the old folder aside, then the new one in; a
  kill in between leaves no folder under the name.  The next writer puts
  the old one back, and sweeps the save's leftovers."""
  import numpy as np
  import mapflow as mf
  path = tmp_path / "state"
  mf.checkpoint.save(path, {"w": np.arange(3.0)})
  # What a kill between the two renames leaves: the old folder aside, a
  # filled temporary folder, and nothing at the name.
  aside = tmp_path / ".state.old-12345"
  path.rename(aside)
  (tmp_path / ".state.tmp-abc").mkdir()
  assert not path.exists()
  # A reader (no lock) is told where the checkpoint went; the writer, when
  # it starts (holding the lock), puts it back.
  with pytest.raises(mf.checkpoint.CheckpointError, match=".state.old-12345"):
    mf.checkpoint.restore(path, {"w": np.zeros(3)})
  assert io.recover_dir(path)
  # (a float64 target without jax_enable_x64: named once, as 32-bit)
  with pytest.warns(UserWarning, match=r"1 leaves asked for as 64-bit "
                    r"\(first: .*w.*\) are loaded as 32-bit"):
    tree = mf.checkpoint.restore(path, {"w": np.zeros(3)})
  assert tree["w"].dtype == np.float32
  np.testing.assert_array_equal(tree["w"], np.arange(3.0))
  assert path.is_dir() and not aside.exists()
  assert io.remove_orphan_dirs(path) == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


TRAIN_SCRIPT = """
import dataclasses
import sys
import numpy as np
import mapflow as mf
from mapflow import data, training
which, workdir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = data.load("digits8", "train")[:128]
if which == "flow":
  cfg = mf.flows.RealNVPConfig(image_shape=(8, 8, 1), num_scales=2,
                               num_blocks=1, hidden_channels=4,
                               couplings_per_scale=1, final_couplings=1)
  tc = training.TrainConfig(
      batch_size=16, learning_rate=3e-3, halve_every=50,
      log=training.LogSchedule(eval_every=4, sample_every=0,
                               checkpoint_every=1, log_every=1,
                               eval_batch=32, eval_limit=32))
  training.train(cfg, tc, x, x[:32], workdir, steps, progress=False)
else:
  xs = np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)[:, :28, :28]
  training.train_vae(mf.vae.VAEConfig(), xs, xs[:32], workdir, steps,
                     dataclasses.replace(training.VAE_TRAINING, batch_size=16,
                                         log=training.LogSchedule(
                                             checkpoint_every=50)),
                     progress=False)
"""


def _train(which, workdir, steps):
  return subprocess.Popen(
      [sys.executable, "-c", TRAIN_SCRIPT, which, str(workdir), str(steps)],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


# The VAE's run takes the same path as the flow's (about 70 s): -m slow.
@pytest.mark.parametrize("which", [
    "flow", pytest.param("vae", marks=pytest.mark.slow)])
def test_training_killed_at_random_moments_resumes_bit_for_bit(tmp_path,
                                                                which):
  """SIGKILL during steps, checkpoint saves and log writes, then the same
  command to the end: the params equal an uninterrupted run's bit for bit,
  no temporary is left and no log row is written twice."""
  import numpy as np
  import mapflow as mf
  from mapflow import training
  steps = 12 if which == "flow" else 250
  ref = tmp_path / "ref"
  t0 = time.time()
  assert _train(which, ref, steps).wait(timeout=600) == 0
  full = time.time() - t0
  out = tmp_path / "killed"
  rng = random.Random(1)
  for _ in range(2):
    proc = _train(which, out, steps)
    time.sleep(rng.uniform(0.3, 0.9) * full)
    if proc.poll() is None:
      os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  proc = _train(which, out, steps)
  assert proc.wait(timeout=600) == 0, proc.stderr.read()
  if which == "flow":
    a, _ = mf.checkpoint.load(ref / "state", key="params")
    b, _ = mf.checkpoint.load(out / "state", key="params")
  else:
    a, _ = mf.checkpoint.load(ref / "params")
    b, _ = mf.checkpoint.load(out / "params")
  for u, v in zip(jax_leaves(a), jax_leaves(b)):
    np.testing.assert_array_equal(u, v)
  leftovers = [p.name for p in out.iterdir()
               if p.name.startswith(".") and p.name != ".lock"]
  assert leftovers == [] and not (out / ".lock").exists()
  for log in ("metrics.jsonl", "evals.jsonl"):
    if (out / log).exists():
      rows = [r["step"] for r in training.read_jsonl(out / log)]
      assert len(rows) == len(set(rows)), (log, rows)
      assert rows == [r["step"] for r in training.read_jsonl(ref / log)]


def jax_leaves(tree):
  import jax
  return jax.tree_util.tree_leaves(tree)
