"""Data loaders, checkpoints, resumable training and shipped models."""

import dataclasses
import gzip
import json
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mapflow as mf
from mapflow import checkpoint as ckpt
from mapflow import data, training

TINY = mf.flows.RealNVPConfig(image_shape=(8, 8, 1), num_scales=2,
                              num_blocks=1, hidden_channels=8,
                              couplings_per_scale=2, final_couplings=2)
TC = training.TrainConfig(batch_size=16, learning_rate=3e-3, halve_every=50,
                          log=training.LogSchedule(
                              eval_every=0, sample_every=0,
                              checkpoint_every=2, log_every=1, eval_batch=64,
                              eval_limit=64))


def write_idx(path, arr, gz=False):
  header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(
      f">{arr.ndim}I", *arr.shape)
  raw = header + arr.astype(np.uint8).tobytes()
  opener = gzip.open if gz else open
  with opener(path, "wb") as f:
    f.write(raw)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loader(tmp_path, gz):
  x = np.random.RandomState(0).randint(0, 256, (5, 28, 28)).astype(np.uint8)
  y = np.arange(5).astype(np.uint8)
  sfx = ".gz" if gz else ""
  write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", x, gz)
  write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", y, gz)
  xs, ys = data.load("fashion_mnist", "test", data_dir=tmp_path,
                     with_labels=True)
  assert xs.shape == (5, 28, 28, 1) and xs.dtype == np.uint8
  np.testing.assert_array_equal(xs[..., 0], x)
  np.testing.assert_array_equal(ys, y)


def test_truncated_idx_is_an_error(tmp_path):
  x = np.zeros((5, 4, 4), np.uint8)
  write_idx(tmp_path / "t10k-images-idx3-ubyte", x)
  p = tmp_path / "t10k-images-idx3-ubyte"
  p.write_bytes(p.read_bytes()[:-7])
  with pytest.raises(ValueError, match="truncated"):
    data.read_idx(p)


def test_folder_loader(tmp_path):
  from PIL import Image
  rng = np.random.RandomState(1)
  imgs = rng.randint(0, 256, (3, 6, 5, 3)).astype(np.uint8)
  for i, a in enumerate(imgs):
    Image.fromarray(a).save(tmp_path / f"im{i}.png")
  x = data.load(f"folder:{tmp_path}", "test")
  np.testing.assert_array_equal(x, imgs)
  g = data.load_folder(tmp_path, channels=1)
  assert g.shape == (3, 6, 5, 1)


def test_tfds_through_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    x, y = data.load_tfds("mnist", "train", with_labels=True)
  assert x.shape == (6, 28, 28, 1) and x.dtype == np.uint8
  assert y.shape == (6,)


def test_digits_split_and_resize():
  tr = data.load("digits8", "train")
  te = data.load("digits8", "test")
  assert tr.shape[1:] == (8, 8, 1) and te.shape[1:] == (8, 8, 1)
  assert len(tr) + len(te) == 1797
  flat = {a.tobytes() for a in tr}
  assert sum(a.tobytes() in flat for a in te) < 0.1 * len(te)
  big = data.load("digits", "test")
  assert big.shape == (len(te), 28, 28, 1) and big.max() > 200


def test_missing_dataset_says_how_to_get_it(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="no t10k-images"):
    data.load_idx_dir(tmp_path, "test")
  with pytest.raises(ValueError, match="expected one of"):
    data.load("imagenet", "train")


def test_checkpoint_round_trip_is_exact(tmp_path):
  flow = mf.flows.from_config(TINY)
  params = flow.init(jax.random.PRNGKey(0),
                     jnp.full((2, 8, 8, 1), 0.5))
  ckpt.save(tmp_path / "c", params, TINY, {"note": "x"})
  back, cfg = ckpt.load(tmp_path / "c")
  assert cfg == TINY
  for a, b in zip(jax.tree_util.tree_leaves(params),
                  jax.tree_util.tree_leaves(back)):
    np.testing.assert_array_equal(a, b)


def test_corrupt_and_mismatched_checkpoints_fail_clearly(tmp_path):
  flow = mf.flows.from_config(TINY)
  params = flow.init(jax.random.PRNGKey(0), jnp.full((2, 8, 8, 1), 0.5))
  ckpt.save(tmp_path / "c", params, TINY)
  # Truncate every array file: the load must say so, not crash obscurely.
  for f in (tmp_path / "c" / "arrays").rglob("*"):
    if f.is_file() and f.stat().st_size > 64 and "METADATA" not in f.name:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
  with pytest.raises(ckpt.CheckpointError):
    ckpt.load(tmp_path / "c")
  # A config that implies other shapes.
  ckpt.save(tmp_path / "d", params, TINY)
  cfg = json.loads((tmp_path / "d" / "config.json").read_text())
  cfg["fields"]["hidden_channels"] = 16
  (tmp_path / "d" / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ckpt.CheckpointError, match="changed since it was "
                     "saved"):
    ckpt.load(tmp_path / "d")
  # Without the config's digest (an older checkpoint), the shapes the
  # config implies still catch it.
  meta = json.loads((tmp_path / "d" / "meta.json").read_text())
  del meta["config_sha256"]
  (tmp_path / "d" / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(ckpt.CheckpointError, match="shape"):
    ckpt.load(tmp_path / "d")
  (tmp_path / "e").mkdir()
  with pytest.raises(ckpt.CheckpointError, match="not a mapflow checkpoint"):
    ckpt.load(tmp_path / "e")


def tiny_data():
  x = data.load("digits8", "train")[:256]
  return x, data.load("digits8", "test")[:64]


def test_training_lowers_the_loss(tmp_path):
  xtr, xte = tiny_data()
  training.train(TINY, TC, xtr, xte, tmp_path, steps=30, progress=False)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").open()]
  first = np.mean([r["bpd"] for r in rows[:5]])
  last = np.mean([r["bpd"] for r in rows[-5:]])
  assert last < first - 0.2
  ev = [json.loads(l) for l in (tmp_path / "evals.jsonl").open()]
  assert ev[-1]["step"] == 30 and np.isfinite(ev[-1]["test_bpd"])
  assert (tmp_path / "samples_000030.png").is_file()


def test_another_flows_workdir_is_named_as_such(tmp_path):
  """Its config is read before its state, whose leaves would not fit."""
  xtr, xte = tiny_data()
  training.train(TINY, TC, xtr, xte, tmp_path, steps=1, progress=False)
  other = dataclasses.replace(TINY, hidden_channels=4)
  with pytest.raises(ckpt.CheckpointError, match=r"workdir: .* holds a run "
                     r"of RealNVPConfig\(.*hidden_channels=8.*use another "
                     r"--workdir"):
    training.train(other, TC, xtr, xte, tmp_path, steps=2, progress=False)


def test_a_resume_with_other_settings_or_images_is_refused(tmp_path):
  """A resumed run with another learning rate, seed or training set would
  quietly carry on a different run: each is named, and nothing is written.
  The log schedule may change; a checkpoint from before the fingerprint
  was recorded resumes as before."""
  xtr, xte = tiny_data()
  training.train(TINY, TC, xtr, xte, tmp_path, steps=1, progress=False)
  meta = ckpt.read_meta(tmp_path / "state")
  assert meta["extra"]["data"] == training.data_fingerprint(xtr)
  before = (tmp_path / "state" / "meta.json").read_text()
  for tc, match in (
      (dataclasses.replace(TC, learning_rate=1e-3),
       r"learning_rate=0\.003 \(now 0\.001\)"),
      (dataclasses.replace(TC, seed=1, batch_size=8),
       r"batch_size=16 \(now 8\), seed=0 \(now 1\)")):
    with pytest.raises(ckpt.CheckpointError, match=r"workdir: .*" + match +
                       r".*another --workdir"):
      training.train(TINY, tc, xtr, xte, tmp_path, steps=2, progress=False)
  with pytest.raises(ckpt.CheckpointError, match=r"other images \(256 of "
                     r"shape \(8, 8, 1\).*these: 128 of shape"):
    training.train(TINY, TC, xtr[:128], xte, tmp_path, steps=2,
                   progress=False)
  flipped = xtr.copy()
  flipped[0, 0, 0, 0] ^= 1  # one pixel's lowest bit
  with pytest.raises(ckpt.CheckpointError, match="other images"):
    training.train(TINY, TC, flipped, xte, tmp_path, steps=2, progress=False)
  assert (tmp_path / "state" / "meta.json").read_text() == before
  # Another log schedule resumes.
  logs = dataclasses.replace(TC, log=dataclasses.replace(TC.log,
                                                         log_every=2))
  assert int(training.train(TINY, logs, xtr, xte, tmp_path, steps=2,
                            progress=False).step) == 2
  # A run already at its steps trains nothing, so it is not refused.
  assert int(training.train(TINY, dataclasses.replace(TC, learning_rate=1e-3),
                            xtr, xte, tmp_path, steps=2,
                            progress=False).step) == 2
  # check_resume=False carries on regardless; the checkpoint then records
  # the new images.
  training.train(TINY, dataclasses.replace(TC, check_resume=False), flipped,
                 xte, tmp_path, steps=3, progress=False)
  assert ckpt.read_meta(tmp_path / "state")["extra"]["data"] == \
      training.data_fingerprint(flipped)
  # A checkpoint without the fingerprint (saved before it was recorded).
  state = training.restore_state(tmp_path, training.init_state(
      mf.flows.from_config(TINY), TC, xtr, training.make_optimizer(TC)))
  training.save_state(tmp_path, state, TINY, TC)
  assert int(training.train(TINY, TC, xtr[:128], xte, tmp_path, steps=4,
                            progress=False).step) == 4
  # NumPy-typed settings are written as plain JSON numbers.
  np_tc = dataclasses.replace(TC, seed=np.int64(0), learning_rate=np.float32(
      3e-3).item(), batch_size=np.int64(16))
  training.train(TINY, np_tc, xtr[:128], xte, tmp_path / "np", steps=1,
                 progress=False)
  assert ckpt.read_meta(tmp_path / "np" / "state")["extra"][
      "train_config"]["seed"] == 0


def test_vae_resume_checks_its_settings_and_images(tmp_path):
  xtr, xte = tiny_data()
  cfg = mf.vae.VAEConfig(image_shape=(8, 8, 1), hidden=(8,), latent_dim=2)
  tc16 = dataclasses.replace(training.VAE_TRAINING, batch_size=16)
  lr2 = dataclasses.replace(tc16, learning_rate=1e-2)
  training.train_vae(cfg, xtr, xte, tmp_path, steps=1, tc=tc16,
                     progress=False)
  with pytest.raises(ckpt.CheckpointError, match=r"learning_rate=0\.001 "
                     r"\(now 0\.01\)"):
    training.train_vae(cfg, xtr, xte, tmp_path, steps=2, tc=lr2,
                       progress=False)
  with pytest.raises(ckpt.CheckpointError, match="other images"):
    training.train_vae(cfg, xtr[:64], xte, tmp_path, steps=2, tc=tc16,
                       progress=False)
  # Finished at step 1: another learning rate trains nothing, so it passes.
  training.train_vae(cfg, xtr, xte, tmp_path, steps=1, tc=lr2,
                     progress=False)
  # From the command line, naming the way out.
  from train import vae as vae_cli
  cli = ["--data", "digits8", "--workdir", str(tmp_path / "cli"),
         "--batch-size", "16", "--no-progress"]
  vae_cli.main(cli + ["--steps", "1"])
  with pytest.raises(SystemExit, match=r"--workdir: .*learning_rate=0\.001 "
                     r"\(now 0\.01\).*--resume-anyway carries on"):
    vae_cli.main(cli + ["--steps", "2", "--learning-rate", "0.01"])
  # ... and carries on when told to, recording the new settings.
  vae_cli.main(cli + ["--steps", "2", "--learning-rate", "0.01",
                      "--resume-anyway"])
  assert ckpt.read_meta(tmp_path / "cli" / "state")["extra"][
      "train_config"]["learning_rate"] == 0.01
  # The library's switch: tc.check_resume=False carries on too.
  training.train_vae(cfg, xtr, xte, tmp_path, steps=2,
                     tc=dataclasses.replace(lr2, check_resume=False),
                     progress=False)
  assert ckpt.read_meta(tmp_path / "state")["extra"]["step"] == 2
  with pytest.raises(TypeError, match="tc: got dict"):
    training.train_vae(cfg, xtr, xte, tmp_path, steps=3, tc={},
                       progress=False)
  # train.flow names its way out.
  from train import flow as flow_cli
  fcli = ["--preset", "digits_realnvp", "--flow", "realnvp_small", "--data",
          "digits8", "--workdir", str(tmp_path / "fcli"), "--batch-size",
          "16", "--no-progress", "--eval-limit", "16", "--eval-every", "0",
          "--sample-every", "0"]
  flow_cli.main(fcli + ["--steps", "1"])
  with pytest.raises(SystemExit, match=r"--workdir: .*seed=0 \(now 3\).*"
                     r"--resume-anyway carries on regardless"):
    flow_cli.main(fcli + ["--steps", "2", "--seed", "3"])
  flow_cli.main(fcli + ["--steps", "2", "--seed", "3", "--resume-anyway"])
  other = dataclasses.replace(cfg, latent_dim=3)
  with pytest.raises(ckpt.CheckpointError, match=r"holds a checkpoint of "
                     r"VAEConfig.*not of this VAE"):
    training.train_vae(other, xtr, xte, tmp_path, steps=2, tc=tc16,
                       progress=False)
  _, elbo = training.train_vae(cfg, xtr, xte, tmp_path, steps=2, tc=tc16,
                               progress=False)
  assert np.isfinite(elbo)
  # A batch larger than the images is refused before anything is written
  # (it had left a step-0 checkpoint that refused the corrected rerun).
  big = tmp_path / "big"
  with pytest.raises(ValueError, match="batch_size: got 16, more than the "
                     "8 training images"):
    training.train_vae(cfg, xtr[:8], xte, big, steps=1, tc=tc16,
                       progress=False)
  assert not big.exists()
  with pytest.raises(SystemExit, match="--batch-size: got 5000, more than"):
    vae_cli.main(["--data", "digits8", "--workdir", str(big), "--batch-size",
                  "5000", "--no-progress", "--steps", "1"])
  assert not big.exists()


@pytest.mark.slow  # 15-50 s on an AVX2-only 2-core CPU
def test_resume_in_two_pieces_equals_one_run(tmp_path):
  xtr, xte = tiny_data()
  one = training.train(TINY, TC, xtr, xte, tmp_path / "a", steps=6,
                       progress=False)
  training.train(TINY, TC, xtr, xte, tmp_path / "b", steps=3, progress=False)
  two = training.train(TINY, TC, xtr, xte, tmp_path / "b", steps=6,
                       progress=False)
  assert int(two.step) == 6
  for a, b in zip(jax.tree_util.tree_leaves(one),
                  jax.tree_util.tree_leaves(two)):
    np.testing.assert_array_equal(a, b)
  steps = [json.loads(l)["step"] for l in (tmp_path / "b" /
                                           "metrics.jsonl").open()]
  assert steps == sorted(set(steps))
  # The params inside the full training state equal the params checkpoint.
  sub, cfg = ckpt.load(tmp_path / "b" / "state", key="params")
  assert cfg == TINY
  for a, b in zip(jax.tree_util.tree_leaves(two.params),
                  jax.tree_util.tree_leaves(sub)):
    np.testing.assert_array_equal(a, b)


def test_training_step_compiles_once(tmp_path, monkeypatch):
  """The state comes out of the step laid out as it went in (replicated
  over the mesh), so later steps reuse the first compile."""
  made = []

  def spy(*args):
    made.append(real(*args))
    return made[-1]
  real = training.make_train_step
  monkeypatch.setattr(training, "make_train_step", spy)
  xtr, xte = tiny_data()
  training.train(TINY, TC, xtr, xte, tmp_path, steps=4, progress=False)
  assert [f._cache_size() for f in made] == [1]


def test_batches_cover_each_epoch_once():
  seen = np.concatenate([training.batch_indices(s, 100, 10, 3)
                         for s in range(10)])
  assert sorted(seen.tolist()) == list(range(100))
  nxt = training.batch_indices(10, 100, 10, 3)
  assert not np.array_equal(nxt, training.batch_indices(0, 100, 10, 3))


@pytest.mark.parametrize("name", mf.pretrained.available())
def test_shipped_models_load_and_score_real_images(name):
  model, params = mf.pretrained.load(name)
  if name.endswith("_vae"):
    x = model(params, jnp.zeros((20,)))
    assert x.shape == (28, 28, 1) and bool(jnp.all(jnp.isfinite(x)))
    return
  src = "digits" if name.startswith("digits") else "fashion_mnist"
  try:
    imgs = data.load(src, "test")[:4]
  except data.DatasetNotFoundError:
    pytest.skip(f"{src} not installed here")
  lp = jax.jit(model.log_prob)(params, mf.flows.dequantize(
      imgs, model.config.num_bits))
  assert lp.shape == (4,) and bool(jnp.all(jnp.isfinite(lp)))


def test_unknown_pretrained_name_is_named():
  with pytest.raises(ValueError, match="expected one of"):
    mf.pretrained.load("imagenet_glow")


def test_every_model_name_has_a_kind_that_its_shipped_model_matches():
  """train.export checks a model against ``KINDS``: every name needs one,
  and each shipped checkpoint is of its name's kind."""
  assert set(mf.pretrained.KINDS) == set(mf.pretrained.DESCRIPTIONS)
  for name in mf.pretrained.available():
    mf.pretrained.check_kind(name, ckpt.read_config(mf.pretrained.path(name)))


def test_a_bad_training_setting_is_refused_before_any_work(tmp_path):
  """Each bad field is named with what it got and what it expected, by
  the library before the workdir is touched, and by the command lines as
  their flag, without a traceback."""
  import dataclasses
  x = np.zeros((4, 8, 8, 1), np.uint8)
  log = lambda **kw: dataclasses.replace(TC, log=dataclasses.replace(
      TC.log, **kw))
  cases = [
      (TC, 0, None, r"steps: got 0, expected an int >= 1"),
      (TC, 2.5, None, r"steps: got 2.5, expected an int >= 1"),
      (TC, 5, -1.0, r"time_budget: got -1.0"),
      (dataclasses.replace(TC, batch_size=0), 5, None,
       r"batch_size: got 0, expected an int >= 1"),
      (dataclasses.replace(TC, learning_rate=float("nan")), 5, None,
       r"learning_rate: got nan, expected a positive number"),
      (dataclasses.replace(TC, wn_l2=-1e-3), 5, None, r"wn_l2: got -0.001"),
      (log(checkpoint_every=0), 5, None,
       r"checkpoint_every: got 0, expected an int >= 1"),
      (log(eval_every=-1), 5, None, r"eval_every: got -1, expected an int"),
  ]
  for tc, steps, budget, match in cases:
    with pytest.raises(ValueError, match=match):
      training.train(TINY, tc, x, x, tmp_path / "w", steps, budget,
                     progress=False)
  with pytest.raises(ValueError, match=r"batch_size: got 0"):
    training.train_vae(mf.vae.VAEConfig(image_shape=(8, 8, 1)), x, x,
                       tmp_path / "v", 5, dataclasses.replace(
                           training.VAE_TRAINING, batch_size=0),
                       progress=False)
  assert not (tmp_path / "w").exists() and not (tmp_path / "v").exists()

  from train import flow, vae
  work = ["--workdir", str(tmp_path / "cli")]
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  for main, args, match in [
      (flow.main, ["--steps", "-5"], r"--steps: got -5, expected an int"),
      (flow.main, ["--batch-size", "0"], r"--batch-size: got 0"),
      (flow.main, ["--checkpoint-every", "0"], r"--checkpoint-every: got 0"),
      (flow.main, ["--data", "nope"], r"--data: got 'nope', expected one of"),
      (flow.main, ["--data-dir", str(tmp_path / "nowhere")],
       r"--data-dir: got .*nowhere'?, which is not a directory"),
      (flow.main, ["--train-limit", "-5"], r"--train-limit: got -5, "
       "expected an int >= 0"),
      (flow.main, ["--seed", str(2 ** 32)], r"--seed: got 4294967296, "
       r"expected an int in \[0, 2\*\*32\)"),
      (vae.main, ["--seed", "-1"], r"--seed: got -1"),
      (flow.main, ["--data", "digits8", "--train-limit", "10"],
       r"--batch-size: got 64, more than the 10 training images "
       r"\(--train-limit\)"),
      (flow.main, ["--data", "digits8"], r"--flow/--data: RealNVPConfig for "
       r"images of shape \(28, 28, 1\), but digits8's are \(8, 8, 1\)"),
      (lambda a: flow.main(["--workdir", str(a_file)] + a[2:]), [],
       r"--workdir: got .*a_file', but .*a_file' is a file"),
      (lambda a: vae.main(["--workdir", ""] + a[2:]), [],
       r"--workdir: got '', expected a folder"),
      (vae.main, ["--learning-rate", "0"], r"--learning-rate: got 0.0"),
      (vae.main, ["--data", "folder:" + str(tmp_path / "none")],
       r"--data: folder: .* is not a folder")]:
    with pytest.raises(SystemExit, match=match):
      main(work + args)
  assert not (tmp_path / "cli").exists()


def test_sigint_stops_between_steps_and_checkpoints(tmp_path):
  import os
  import signal
  import subprocess
  import sys
  import textwrap
  import time
  script = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
      from tests.test_data_train import TINY, TC, tiny_data
      from mapflow import training
      xtr, xte = tiny_data()
      training.train(TINY, TC, xtr, xte, {str(tmp_path)!r}, steps=100000,
                     progress=False)
  """)
  proc = subprocess.Popen([sys.executable, "-c", script],
                          stderr=subprocess.PIPE)
  deadline = time.time() + 240
  while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
    time.sleep(0.5)
  time.sleep(1.0)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=240)
  assert proc.returncode != 0 and b"checkpointed" in err
  meta = json.loads((tmp_path / "state" / "meta.json").read_text())
  logged = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").open()]
  assert meta["extra"]["step"] >= max(logged)


def test_export_refuses_a_missing_run_and_a_model_of_another_kind(
    tmp_path, monkeypatch):
  """train.export names --workdir when it holds no run, and --name when the
  run is of another kind than the name holds (a VAE would have replaced a
  shipped flow); a flow of the right kind is exported and loads."""
  from mapflow import pretrained
  from train import export
  monkeypatch.setattr(pretrained, "MODELS_DIR", tmp_path / "models")
  run = lambda *a: export.main(["--command", "test", "--samples", "", *a])
  with pytest.raises(SystemExit, match=r"--workdir: got .*nowhere.* holds "
                     r"no training run"):
    run("--workdir", str(tmp_path / "nowhere"), "--name", "digits_realnvp")
  xtr, xte = tiny_data()
  cfg = mf.vae.VAEConfig(image_shape=(28, 28, 1), hidden=(8,), latent_dim=2)
  x28 = np.zeros((32, 28, 28, 1), np.uint8)
  training.train_vae(cfg, x28, x28, tmp_path / "vae", steps=1,
                     tc=dataclasses.replace(training.VAE_TRAINING,
                                            batch_size=16), progress=False)
  with pytest.raises(SystemExit, match=r"--name: got a VAEConfig for images "
                     r"\(28, 28, 1\), but 'digits_realnvp' holds a "
                     r"RealNVPConfig"):
    run("--workdir", str(tmp_path / "vae"), "--name", "digits_realnvp")
  training.train(TINY, TC, xtr, xte, tmp_path / "flow", steps=1,
                 progress=False)
  with pytest.raises(SystemExit, match=r"--name: got a RealNVPConfig for "
                     r"images \(8, 8, 1\)"):
    run("--workdir", str(tmp_path / "flow"), "--name", "digits_realnvp")
  assert not (tmp_path / "models").exists()
  # A --samples path that cannot be written, or an empty --command, is
  # refused before the shipped model is replaced (it had been replaced,
  # then the export crashed).
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  for args, match in (
      (["--samples", str(a_file / "s.png")], r"--samples: got .*a_file/s"
       r"\.png', under .*a_file', which is a file"),
      (["--samples", "{nme}.png"], r"--samples: got '\{nme\}\.png', "
       r"expected a path in which \{name\} is the only field"),
      (["--command", " "], "--command: got ''")):
    with pytest.raises(SystemExit):
      run("--workdir", str(tmp_path / "vae"), "--name", "fashion_mnist_vae",
          *args)
  assert not (tmp_path / "models").exists()
  # A VAE's eval.json that is not JSON names --workdir.
  (tmp_path / "vae" / "eval.json").write_text("{torn")
  with pytest.raises(SystemExit, match=r"--workdir: .*eval\.json is not "
                     "readable as JSON"):
    run("--workdir", str(tmp_path / "vae"), "--name", "fashion_mnist_vae")
  (tmp_path / "vae" / "eval.json").write_text('{"step": 1}')
  run("--workdir", str(tmp_path / "vae"), "--name", "fashion_mnist_vae")
  decode, params = pretrained.load("fashion_mnist_vae")
  assert decode(params, jnp.zeros(2)).shape == (28, 28, 1)
  # A flow's evals.jsonl torn by a kill is read up to its last whole line.
  with (tmp_path / "flow" / "evals.jsonl").open("a") as f:
    f.write('{"step": 9, "test_b')
  assert export.last_eval(tmp_path / "flow")["step"] != 9


def test_unreadable_image_files_name_the_flag(tmp_path):
  """A folder of files that are not images (or a torn .gz) had ended
  train.flow and train.vae in PIL's or gzip's traceback."""
  from train import flow as flow_cli
  from train import vae as vae_cli
  imgs = tmp_path / "imgs"
  imgs.mkdir()
  for i in range(4):
    (imgs / f"{i}.png").write_bytes(b"not a png")
  for main in (flow_cli.main, vae_cli.main):
    with pytest.raises(SystemExit, match=r"--data: folder:.*imgs: a file "
                       r"could not be read \(UnidentifiedImageError"):
      main(["--workdir", str(tmp_path / "w"), "--data", f"folder:{imgs}",
            "--steps", "1", "--no-progress"])
  assert not (tmp_path / "w").exists()
