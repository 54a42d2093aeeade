"""Experiment infrastructure: protocol indices, resumable tables, baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mapflow as mf
from mapflow import experiments as ex


def test_protocol_indices_follow_design():
  val, test = ex.protocol_indices()
  np.random.seed(0)
  idx = np.random.choice(10000, 80, False)
  np.testing.assert_array_equal(val, idx[:16])
  np.testing.assert_array_equal(test, idx[16:])
  assert len(set(val) & set(test)) == 0


def test_result_table_resumes_and_is_atomic(tmp_path):
  cols = ["method", "scale", "image", "psnr"]
  t = ex.ResultTable(tmp_path / "r.csv", cols, ["method", "scale", "image"])
  t.add([{"method": "ours", "scale": 0.5, "image": 3, "psnr": 21.25}])
  assert t.done(method="ours", scale=0.5, image=3)
  again = ex.ResultTable(tmp_path / "r.csv", cols, ["method", "scale", "image"])
  assert again.done(method="ours", scale=0.5, image=3)
  assert not again.done(method="asim", scale=0.5, image=3)
  assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]
  with pytest.raises(ValueError, match="missing"):
    again.add([{"method": "x"}])
  with pytest.raises(ValueError, match="columns"):
    ex.ResultTable(tmp_path / "r.csv", ["a", "b"], ["a"])


def test_result_files_get_the_usual_permissions(tmp_path):
  """Atomic writes go through private (0600) temporary files; what they
  leave behind has the permissions the user's umask gives any file."""
  import numpy as np
  from mapflow import checkpoint, viz
  ex.write_csv_atomic(tmp_path / "a.csv", [{"k": 1}], ["k"])
  checkpoint.write_json_atomic(tmp_path / "a.json", {"k": 1})
  checkpoint.write_text_atomic(tmp_path / "a.txt", "k\n")
  viz.save_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
  assert (tmp_path / "a.txt").read_text() == "k\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "a.csv", "a.json", "a.png", "a.txt"]  # no temporary file left
  for name in ("a.csv", "a.json", "a.png", "a.txt"):
    mode = (tmp_path / name).stat().st_mode & 0o777
    assert mode == 0o666 & ~checkpoint._UMASK, (name, oct(mode))


def test_labelled_grid_titles_the_same_tiles(tmp_path):
  """Labels go in margins above and left of the grid; the tiles are the
  unlabelled grid's pixels, and too many labels are refused by name."""
  from PIL import Image
  from mapflow import viz
  x = np.random.default_rng(0).random((6, 5, 5, 1))
  viz.save_grid(tmp_path / "plain.png", x, ncols=3, scale=2)
  viz.save_labelled_grid(tmp_path / "lab.png", x, 3,
                         col_labels=["truth", "y", "ours"],
                         row_labels=["test 1", ""], scale=2)
  plain = np.asarray(Image.open(tmp_path / "plain.png"))
  lab = np.asarray(Image.open(tmp_path / "lab.png").convert("L"))
  top, left = (a - b for a, b in zip(lab.shape, plain.shape))
  assert top > 0 and left > 0
  np.testing.assert_array_equal(lab[top:, left:], plain)
  # Dark text in both margins; the unlabelled second row's margin is blank.
  assert lab[:top, left:].min() < 128 and lab[top:, :left].min() < 128
  assert lab[top + plain.shape[0] // 2 + 1:, :left].min() == 255
  with pytest.raises(ValueError, match="col_labels: got 4 labels for 3"):
    viz.save_labelled_grid(tmp_path / "bad.png", x, 3, col_labels="abcd")
  with pytest.raises(ValueError, match="row_labels: got 3 labels for 2"):
    viz.save_labelled_grid(tmp_path / "bad.png", x, 3, row_labels="abc")


def test_isotropic_ablation_matches_average_variance():
  n = mf.noise.sinusoidal((16, 8, 1), 1.0)
  iso = ex.isotropic_like(n)
  assert float(iso.sigma) ** 2 == pytest.approx(
      float(np.mean(np.asarray(n.std_map) ** 2)), rel=1e-5)


def test_bm3d_denoises_when_available():
  pytest.importorskip("bm3d")
  rng = np.random.RandomState(0)
  x = np.zeros((1, 16, 16, 1), np.float32)
  x[:, 4:12, 4:12] = 0.8
  y = x + 0.1 * rng.randn(*x.shape).astype(np.float32)
  d = ex.bm3d_denoise(y, 0.1)
  assert np.mean((d - x) ** 2) < 0.5 * np.mean((y - x) ** 2)


def test_mean_and_stderr():
  m, s = ex.mean_and_stderr([1.0, 2.0, 3.0, 4.0])
  assert m == 2.5 and s == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)


def test_split_start_reads_a_learning_rate():
  assert ex.split_start("pixels@0.003") == ("pixels", 0.003)
  assert ex.split_start("zeros") == ("zeros", None)
  assert ex.start_kwargs("pixels@0.003") == ex.start_kwargs("pixels")
  for bad, why in (("pixel", "expected one of"), ("pixels@", "positive"),
                   ("pixels@-1", "positive"), ("zeros@fast", "positive"),
                   ("zeros@nan", "positive")):
    with pytest.raises(ValueError, match=f"inits: got start '{bad}'.*{why}"):
      ex.split_start(bad)


def test_start_optimizer_is_adam_at_the_start_learning_rate():
  import optax
  default = optax.sgd(1.0)
  assert ex.start_optimizer("zeros", default) is default
  opt = ex.start_optimizer("zeros@0.003", default)
  g = {"w": jnp.array([2.0, -5.0])}
  updates, _ = opt.update(g, opt.init(g))
  # Adam's first step is lr * sign(g), whatever the gradient's size.
  np.testing.assert_allclose(updates["w"], [-0.003, 0.003], rtol=1e-4)


def test_random_start_kwargs_and_their_checks(tmp_path):
  kw = ex.start_kwargs("random@0.01", restarts=3, init_std=0.5, seed=2)
  assert kw["init"] == "random" and kw["restarts"] == 3
  assert kw["init_std"] == 0.5
  np.testing.assert_array_equal(kw["key"], jax.random.PRNGKey(2))
  x = np.zeros((1, 4, 4, 1), np.float32)
  make = lambda **k: ex.Context(tmp_path, prior=None, params=None, x_val=x,
                                x_test=x, test_ids=[0], methods=("ours",),
                                **k)
  assert make(restarts=2, init_std=0.3).restarts == 2
  # One pair of defaults serves the library and the command line.
  from recover import common
  args = common.base_parser("prog", "").parse_args(["--out", str(tmp_path)])
  default = make()
  plain = ex.start_kwargs("random")
  for got in ((args.restarts, args.init_std),
              (default.restarts, default.init_std),
              (plain["restarts"], plain["init_std"])):
    assert got == (ex.RANDOM_RESTARTS, ex.RANDOM_INIT_STD)
  for bad, match in (({"restarts": 0}, "restarts: got 0"),
                     ({"restarts": 1.5}, "restarts: got 1.5"),
                     ({"init_std": 0.0}, "init_std: got 0.0"),
                     ({"init_std": float("nan")}, "init_std: got nan")):
    with pytest.raises(ValueError, match=match):
      make(**bad)
