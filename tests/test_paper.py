"""The paper's application: protocol, method registry, grids, tables."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mapflow as mf
from recover.paper import cells, methods, protocol, tables


def test_protocol_indices_follow_design():
  val, test = protocol.protocol_indices()
  np.random.seed(0)
  idx = np.random.choice(10000, 80, False)
  np.testing.assert_array_equal(val, idx[:16])
  np.testing.assert_array_equal(test, idx[16:])
  assert len(set(val) & set(test)) == 0


def test_result_table_resumes_replaces_and_is_atomic(tmp_path):
  cols = ["method", "scale", "image", "psnr"]
  t = tables.ResultTable(tmp_path / "r.csv", cols, ["method", "scale",
                                                      "image"])
  t.add([{"method": "ours", "scale": 0.5, "image": 3, "psnr": 21.25}])
  assert t.done(method="ours", scale=0.5, image=3)
  again = tables.ResultTable(tmp_path / "r.csv", cols,
                             ["method", "scale", "image"])
  assert again.done(method="ours", scale=0.5, image=3)
  assert not again.done(method="asim", scale=0.5, image=3)
  # A row with a recorded key replaces it: a rerun never duplicates.
  again.add([{"method": "ours", "scale": 0.5, "image": 3, "psnr": 22.5},
             {"method": "asim", "scale": 0.5, "image": 3, "psnr": 20.0}])
  rows = tables.read_rows(tmp_path / "r.csv")
  assert [(r["method"], r["psnr"]) for r in rows] == [("ours", "22.5"),
                                                       ("asim", "20")]
  assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]
  with pytest.raises(ValueError, match="missing"):
    again.add([{"method": "x"}])
  with pytest.raises(ValueError, match="columns"):
    tables.ResultTable(tmp_path / "r.csv", ["a", "b"], ["a"])


def test_result_table_reads_duplicates_once(tmp_path):
  """A file an older version left with a key twice (an interrupted run)
  is read with each key once, the last row winning."""
  (tmp_path / "s.csv").write_text("k,v\n1,a\n2,b\n1,c\n")
  t = tables.ResultTable(tmp_path / "s.csv", ["k", "v"], ["k"])
  assert [(r["k"], r["v"]) for r in t.rows] == [("1", "c"), ("2", "b")]


def test_result_files_get_the_usual_permissions(tmp_path):
  """Atomic writes go through private (0600) temporary files; what they
  leave behind has the permissions the user's umask gives any file."""
  from mapflow import io, viz
  io.write_csv_atomic(tmp_path / "a.csv", [{"k": 1}], ["k"])
  io.write_json_atomic(tmp_path / "a.json", {"k": 1})
  io.write_text_atomic(tmp_path / "a.txt", "k\n")
  viz.save_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
  assert (tmp_path / "a.txt").read_text() == "k\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "a.csv", "a.json", "a.png", "a.txt"]  # no temporary file left
  for name in ("a.csv", "a.json", "a.png", "a.txt"):
    mode = (tmp_path / name).stat().st_mode & 0o777
    assert mode == 0o666 & ~io.UMASK, (name, oct(mode))


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
  iso = protocol.isotropic_like(n)
  assert float(iso.sigma) ** 2 == pytest.approx(
      float(np.mean(np.asarray(n.std_map) ** 2)), rel=1e-5)


def test_bm3d_denoises_when_available(monkeypatch):
  bm3d = pytest.importorskip("bm3d")
  threads = []
  real = bm3d.bm3d
  monkeypatch.setattr(bm3d, "bm3d", lambda z, sigma_psd, profile: (
      threads.append(profile.num_threads) or real(z, sigma_psd, profile)))
  rng = np.random.RandomState(0)
  x = np.zeros((1, 16, 16, 1), np.float32)
  x[:, 4:12, 4:12] = 0.8
  y = x + 0.1 * rng.randn(*x.shape).astype(np.float32)
  d = cells.bm3d_denoise(y, 0.1)
  assert np.mean((d - x) ** 2) < 0.5 * np.mean((y - x) ** 2)
  # Deterministic: a rerun (a resumed experiment, the demo) gives the same
  # bits; bm3d's several threads did not.
  y28 = rng.rand(2, 28, 28, 1).astype(np.float32)
  d28 = cells.bm3d_denoise(y28, 0.3)
  for _ in range(3):
    np.testing.assert_array_equal(cells.bm3d_denoise(y28, 0.3), d28)
  assert threads and set(threads) == {1}


def test_mean_and_stderr():
  m, s = tables.mean_and_stderr([1.0, 2.0, 3.0, 4.0])
  assert m == 2.5 and s == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)


def test_starts_parse_and_label():
  assert methods.parse_start("pixels@0.003") == methods.Start(
      "pixels", 0.003, methods.BASE_STEPS)
  assert methods.parse_start("zeros:200") == methods.Start(
      "zeros", methods.BASE_LR, 200)
  for text in ("zeros", "pixels@0.003", "random@0.01:50", "zeros:200"):
    assert methods.parse_start(text).label == text
  assert methods.parse_start("isotropic:50").cost == 100
  assert methods.parse_starts("zeros,pixels,zeros") == (
      methods.Start("zeros"), methods.Start("pixels"))
  for bad, why in (("pixel", "expected one of"), ("pixels@", "positive"),
                   ("pixels@-1", "positive"), ("zeros@fast", "positive"),
                   ("zeros@nan", "positive"), ("zeros:0", "step count"),
                   ("zeros:1.5", "step count")):
    with pytest.raises(ValueError, match=f"inits: got start '{bad}'.*{why}"):
      methods.parse_start(bad)


def test_cells_adam_is_adam_at_the_rate():
  opt = cells.adam(0.003)
  assert cells.adam(0.003) is opt  # one object per rate: compiled once
  g = {"w": jnp.array([2.0, -5.0])}
  updates, _ = opt.update(g, opt.init(g))
  # Adam's first step is lr * sign(g), whatever the gradient's size.
  np.testing.assert_allclose(updates["w"], [-0.003, 0.003], rtol=1e-4)


def test_start_config_and_context_checks(tmp_path):
  cfg = cells.start_config(methods.parse_start("random@0.01"), restarts=3,
                           init_std=0.5, seed=2)
  assert cfg.init == "random" and cfg.restarts == 3
  assert cfg.init_std == 0.5
  np.testing.assert_array_equal(cfg.key, jax.random.PRNGKey(2))
  px = cells.start_config(methods.Start("pixels"), init_range=(0.0, 1.0))
  assert (px.init, px.parametrization, px.init_range) == (
      "measurements", "x", (0.0, 1.0))
  x = np.zeros((1, 4, 4, 1), np.float32)
  images = cells.Images(x, x, (0,), (1,))
  models = cells.Models(None, None)
  make = lambda **k: cells.Context(tmp_path, models, images,
                                   cells.Options(("ours",), **k))
  assert make(restarts=2, init_std=0.3).options.restarts == 2
  # One pair of defaults serves the library and the command line.
  from recover import common
  args = common.base_parser("prog", "").parse_args(["--out", str(tmp_path)])
  plain = cells.start_config(methods.Start("random"))
  for got in ((args.restarts, args.init_std),
              (cells.Options(()).restarts, cells.Options(()).init_std),
              (plain.restarts, plain.init_std)):
    assert got == (methods.RANDOM_RESTARTS, methods.RANDOM_INIT_STD)
  for bad, match in (({"restarts": 0}, "restarts: got 0"),
                     ({"restarts": 1.5}, "restarts: got 1.5"),
                     ({"init_std": 0.0}, "init_std: got 0.0"),
                     ({"init_std": float("nan")}, "init_std: got nan")):
    with pytest.raises(ValueError, match=match):
      make(**bad)
  with pytest.raises(ValueError, match="methods: got \\['dip'\\]"):
    cells.Context(tmp_path, models, images, cells.Options(("dip",)))

  # run.json: a setting that changes scores must match; the machines that
  # added to the folder are listed, each once.
  import json
  run = lambda info: cells.Context(tmp_path / "run", models, images,
                                   cells.Options(("ours",)), run_info=info)
  # Until the folder holds a row its run.json binds nothing.
  with run({"seed": 5, "hosts": ["cpu Z"]}):
    pass
  with run({"seed": 0, "hosts": ["cpu A"]}) as ctx:
    ctx.selection.add([{"experiment": "sinusoidal", "setting": "0.5",
                        "method": "ours", "hyper": 0.5, "start": "zeros",
                        "val_images": "1 2", "val_score": 11.0}])
  with run({"seed": 0, "hosts": ["cpu B"]}):
    pass
  with run({"seed": 0, "hosts": ["cpu A"]}):
    pass
  info = json.loads((tmp_path / "run" / "run.json").read_text())
  assert info == {"seed": 0, "hosts": ["cpu A", "cpu B"]}
  with pytest.raises(ValueError, match="--seed: got 1"):
    with run({"seed": 1, "hosts": ["cpu A"]}):
      pass
  assert "cores; jax" in common.host_description()


def _grown(grid, score, values=None):
  """Grows ``grid`` against a score function until settled."""
  scores = {v: score(v) for v in (values or grid.values)}
  while True:
    more = methods.grow(grid, scores)
    if not more:
      return scores
    scores.update({v: score(v) for v in more})


@pytest.mark.parametrize("name,optimum", [("ours", 0.03), ("ours", 30.0),
                                          ("ours", 0.7), ("asim", 12.0),
                                          ("asim", 0.02), ("bm3d", 0.013)])
def test_grid_grows_until_the_choice_is_interior(name, optimum):
  """Scores peaked (in log value) at ``optimum``, off the paper's grid or
  past its ends: the grid grows until the chosen value has a tried value
  on each side, each at most the grid's ratio away, and the choice lands
  within one ratio of the optimum."""
  grid = methods.METHODS[name].grid
  if name == "bm3d":
    grid = grid._replace(values=tuple(0.1 * v for v in grid.values))
  score = lambda v: -abs(np.log(max(v, 1e-9) / optimum))
  scores = _grown(grid, score)
  best = methods.choose(scores)
  vals = sorted(scores)
  i = vals.index(best)
  assert 0 < i < len(vals) - 1, (best, vals)
  assert best / vals[i - 1] <= grid.ratio * (1 + 1e-5)
  assert vals[i + 1] / best <= grid.ratio * (1 + 1e-5)
  assert abs(np.log(best / optimum)) <= np.log(grid.ratio) + 1e-6
  assert methods.settled(grid, scores)


def test_grid_zero_is_interior_and_ties_do_not_grow():
  grid = methods.METHODS["asim"].grid
  # Best at γ = 0, the natural bound: nothing more to try.
  assert methods.grow(grid, {v: -v for v in grid.values}) == []
  # A flat stretch at the low end: the tie farthest from the grid's ends
  # is chosen, so the plateau does not grow the grid past 0.1.
  flat = {0.1: 20.0, 0.5: 20.0, 1.0: 20.005, 5.0: 19.0, 10.0: 18.0}
  assert methods.choose(flat) == 1.0
  assert methods.grow(methods.METHODS["ours"].grid, flat) == [2.0]
  flat[0.1] = 20.5  # no longer a tie: the edge grows
  assert methods.grow(methods.METHODS["ours"].grid, flat) == [0.05, 0.2]
  # Nothing finite: nothing to grow toward.
  assert methods.grow(grid, {0.1: float("nan"), 1.0: float("-inf")}) == []


def test_every_flow_method_is_offered_the_same_budgets():
  """The protocols are fair by construction, and a start that costs ours
  more steps is refused unless every flow method gets that budget."""
  for p in protocol.PROTOCOLS.values():
    methods.check_fair(p.methods, p.starts)
    flow = [methods.METHODS[m] for m in p.methods
            if methods.METHODS[m].family == "flow"]
    budgets = [{(s.lr, s.cost) for s in methods.offers(m, p.starts)}
               for m in flow]
    assert all(b == budgets[0] for b in budgets), p.experiment
  flow3 = ("ours", "ablation", "asim")
  with pytest.raises(ValueError, match="ablation would lack"):
    methods.check_fair(flow3, methods.parse_starts("zeros,isotropic"))
  methods.check_fair(flow3, methods.parse_starts("zeros,isotropic,zeros:200"))
  # Asim et al. moves the image too (its loss at z = G^-1(x)).
  assert methods.offers(methods.METHODS["asim"],
                        methods.parse_starts("pixels,noise_latent")) == (
                            methods.Start("pixels"),)


def test_a_run_of_some_methods_gets_the_starts_they_can_take():
  """Ours' continuation start is left out of a run without ours (and the
  noise-latent start of a run without a method that moves it), and what
  remains is still a fair offer."""
  from recover.paper.cells import protocol_starts, task_starts
  from recover.paper.protocol import PROTOCOLS
  kinds = ("zeros", "measurements", "random", "pixels", "isotropic")
  radial = PROTOCOLS["radial"]
  some = ("ablation", "asim", "bm3d")
  got = protocol_starts(radial, some, kinds)
  assert {s.kind for s in got} == {"measurements", "zeros", "pixels"}
  assert {(s.lr, s.cost) for s in got} == {(s.lr, s.cost)
                                           for s in radial.starts}
  methods.check_fair(some, got, kinds)
  assert protocol_starts(radial, ("ours",) + some, kinds) == radial.starts
  assert protocol_starts(radial, ("bm3d",), kinds) == ()


def test_protocol_table_lists_every_method_of_every_experiment():
  text = protocol.protocol_table()
  for p in protocol.PROTOCOLS.values():
    for m in p.methods:
      assert f"| {p.experiment} | {methods.METHODS[m].title} |" in text


def test_edge_choices_flag_values_at_the_ends():
  sel = [{"experiment": "e", "setting": "1", "method": "ours",
          "hyper": str(v), "start": "zeros", "val_score": "0"}
         for v in (0.1, 0.5, 1.0)]
  sel += [{"experiment": "e", "setting": "1", "method": "asim",
           "hyper": f"{v}|zeros", "val_score": "0"} for v in (0.0, 0.5)]
  chosen = {("e", "1", "ours"): "0.1|zeros", ("e", "1", "asim"): "0|zeros"}
  assert tables.edge_choices(sel, chosen) == [("e", "1", "ours", 0.1,
                                               "smallest")]
  chosen = {("e", "1", "ours"): "0.5|zeros", ("e", "1", "asim"): "0.5|zeros"}
  assert tables.edge_choices(sel, chosen) == [("e", "1", "asim", 0.5,
                                               "largest")]


def test_paired_bootstrap_interval():
  """The mean of N(0, 1) samples: the interval holds the point estimate
  and is about 2 x 1.96 / sqrt(n) wide; a statistic of paired copies
  (a difference of the same images) has a zero-width interval."""
  rng = np.random.default_rng(1)
  a = rng.normal(size=400)
  point, lo, hi, ok = mf.metrics.paired_bootstrap(
      lambda d: float(np.mean(d["a"])), {"a": a}, num_resamples=1000)
  assert lo < point < hi and ok == 1000
  assert (hi - lo) == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.15)
  _, lo, hi, _ = mf.metrics.paired_bootstrap(
      lambda d: float(np.mean(d["a"] - d["b"])), {"a": a, "b": a.copy()},
      num_resamples=50)
  assert lo == hi == 0.0
  with pytest.raises(ValueError, match="samples"):
    mf.metrics.paired_bootstrap(np.mean, {"a": a, "b": a[:3]})


def test_committed_main_results_have_no_edge_optimum():
  """Every main result folder's chosen values are interior to what was
  tried (the fair protocol's grids grew until they were)."""
  from pathlib import Path
  from recover import report
  root = Path(__file__).resolve().parents[1] / "results"
  for kind in report.COMMANDS:
    assert report.folder_edges(root / kind) == [], kind


def test_a_claim_over_a_partial_curve_says_how_far_it_reaches():
  """A claim is computed where both curves have cells, and its row names
  those settings, so a curve still being run is not read as the whole."""
  from recover import report
  rng = np.random.RandomState(0)
  imgs = range(8)
  cells_ = {}
  for s, ours, bm3d in ((0.1, 35.0, 33.0), (0.2, 31.0, 27.5),
                        (0.4, 25.0, 22.5), (0.8, 17.6, None)):
    cells_[("radial", str(s), "ours")] = {i: ours + rng.randn() * 0.1
                                          for i in imgs}
    if bm3d is not None:
      cells_[("radial", str(s), "bm3d")] = {i: bm3d + rng.randn() * 0.1
                                            for i in imgs}
  (c,) = report.claims(cells_)
  assert c["over"] == "s ∈ {0.1, 0.2, 0.4}"
  (row,) = report._claim_rows([c])
  assert "(over s ∈ {0.1, 0.2, 0.4})" in row
  # ours's s = 0.8 cell, which BM3D lacks, takes no part: the figure is
  # the one without it (with it, BM3D's 0.4 point would read about 1.9x).
  (alone,) = report.claims({k: v for k, v in cells_.items()
                            if k[1] != "0.8"})
  assert c["measured"] == alone["measured"]
  assert (c["lo"], c["hi"]) == (alone["lo"], alone["hi"])


def test_a_cell_figure_is_stale_until_drawn_after_its_kept_images(tmp_path):
  """A run killed after keeping a method's images but before drawing the
  PNG leaves it showing other images (or missing): the next run redraws
  it, and only then."""
  import os
  from recover.paper import figures
  x = np.full((3, 4, 4, 1), 0.5, np.float32)
  assert not figures.figure_is_stale(tmp_path, "radial", "0.1", ["ours"])
  figures.keep_shown(tmp_path, "radial", "0.1", "ours", x, 2)
  assert figures.figure_is_stale(tmp_path, "radial", "0.1", ["ours"])
  figures.save_cell_figure(tmp_path, "radial", "0.1", x[:3], x[:3],
                           {"ours": x[:3]}, ["ours"])
  assert not figures.figure_is_stale(tmp_path, "radial", "0.1", ["ours"])
  kept = tmp_path / "figures" / "shown" / "radial_0.1_ours.npz"
  later = (tmp_path / "figures" / "radial_0.1.png").stat().st_mtime_ns + 10**9
  # A fresh checkout's arbitrary file times: the PNG records what it drew.
  os.utime(kept, ns=(later, later))
  assert not figures.figure_is_stale(tmp_path, "radial", "0.1", ["ours"])
  figures.keep_shown(tmp_path, "radial", "0.1", "ours", x * 0.5, 2)
  assert figures.figure_is_stale(tmp_path, "radial", "0.1", ["ours"])
  # A method kept but not yet drawn.
  figures.save_cell_figure(tmp_path, "radial", "0.1", x[:3], x[:3],
                           {"ours": x[:3] * 0.5}, ["ours"])
  assert not figures.figure_is_stale(tmp_path, "radial", "0.1", ["ours"])
  figures.keep_shown(tmp_path, "radial", "0.1", "bm3d", x, 2)
  assert figures.figure_is_stale(tmp_path, "radial", "0.1", ["ours", "bm3d"])
  # A PNG drawn before the record existed: stale if older than its images.
  (tmp_path / "figures" / "shown" / "radial_0.1.drawn.json").unlink()
  os.utime(kept, ns=(later, later))
  assert figures.figure_is_stale(tmp_path, "radial", "0.1", ["ours"])


class _StubCell:
  """A cell whose scores are planted: one recorrupted draw misranks two
  configurations that the mean of four draws orders correctly."""

  def __init__(self, folder, truth, draw0):
    self.ctx = type("Ctx", (), {})()
    self.ctx.selection = tables.ResultTable(folder / "selection.csv",
                                            tables.SELECTION_COLUMNS,
                                            tables.SELECTION_KEY)
    self.ctx.draws = tables.ResultTable(folder / tables.DRAWS_FILE,
                                        tables.DRAWS_COLUMNS,
                                        tables.DRAWS_KEY)
    self.task = type("Task", (), {"experiment": "radial", "setting": "0.1"})
    self.val_images = "1 2"
    self.truth, self.draw0, self.fits = truth, draw0, []

  def refines(self, method):
    return method.select != "psnr"

  def _err(self, start, value, draw):
    self.fits.append((start.label, value, draw))
    t = self.truth(start, value)
    # Draw 0 is off by the planted amount; draws 1-3 average it away.
    off = self.draw0(start, value)
    return t + {0: off, 1: -off, 2: 0.3 * off, 3: -0.3 * off}[draw]

  def score(self, method, start, value):
    return cells.error_db(self._err(start, value, 0))

  def recorrupted_error(self, method, start, value, draw):
    return self._err(start, value, draw)


def test_blind_selection_rescores_its_best_few_over_more_draws(tmp_path):
  """By one draw β 0.25 beats the true best β 0.5 (planted); the best three
  by one draw get three more draws each, the mean picks β 0.5, and a rerun
  reads every draw back instead of fitting again."""
  starts = (methods.Start("pixels", lr=0.003), methods.Start("zeros"))
  truth = lambda st, v: (1e-3 * (1 + abs(np.log2(v / 0.5)))
                         * (1.0 if st.kind == "pixels" else 1.5))
  # β 0.25 misranked; zeros at β 5 gets a negative estimate (below the
  # floor: it keeps its order).
  draw0 = lambda st, v: {("pixels", 0.25): -1.2e-3,
                         ("zeros", 5.0): -2 * truth(st, v)}.get(
                             (st.kind, v), 0.0)
  ours_hb = methods.METHODS["ours_heldout"]
  cell = _StubCell(tmp_path, truth, draw0)
  value, start, score, scores = cells.tune(cell, ours_hb, starts)
  assert (value, start) == (0.5, starts[0])
  assert score == pytest.approx(30.0, abs=1e-3)
  extra = {(s, v) for s, v, d in cell.fits if d > 0}
  # The best three by one draw (the negative estimate first: it keeps its
  # order above the floor), then β 1, which the mean's choice needed as
  # its neighbour.
  single = {(r["start"], float(r["hyper"])): float(r["val_score"])
            for r in tables.read_rows(tmp_path / "selection.csv")}
  top = sorted(single, key=lambda c: -single[c])[:cells.R2R_REFINED]
  assert top == [("zeros", 5.0), ("pixels@0.003", 0.25),
                 ("pixels@0.003", 0.5)]
  assert extra == set(top) | {("pixels@0.003", 1.0)}
  assert sorted({d for _, _, d in cell.fits}) == list(range(cells.R2R_DRAWS))
  drawn = tables.read_rows(tmp_path / tables.DRAWS_FILE)
  assert len(drawn) == len(extra) * (cells.R2R_DRAWS - 1)
  # The negative estimate is kept in its score, so the mean is exact.
  assert single[("zeros", 5.0)] > 100
  assert cells.error_of_db(single[("zeros", 5.0)]) == pytest.approx(
      -truth(starts[1], 5.0), rel=1e-5)
  assert scores[starts[1]][5.0] == pytest.approx(
      -10 * np.log10(truth(starts[1], 5.0)), abs=1e-3)
  # With one draw (the planted misranking) the choice would be β 0.25.
  assert methods.choose({v: sc for (st, v), sc in single.items()
                         if st == "pixels@0.003"}) == 0.25
  again = _StubCell(tmp_path, truth, draw0)
  assert cells.tune(again, ours_hb, starts)[:3] == (value, start, score)
  assert again.fits == []
  # Killed after some draws were written: a rerun fits only the others.
  lost = drawn[::2]
  (tmp_path / tables.DRAWS_FILE).write_text(
      ",".join(tables.DRAWS_COLUMNS) + "\n" + "".join(
          ",".join(r[c] for c in tables.DRAWS_COLUMNS) + "\n"
          for r in drawn[1::2]))
  resumed = _StubCell(tmp_path, truth, draw0)
  assert cells.tune(resumed, ours_hb, starts)[:3] == (value, start, score)
  assert sorted((s_, tables._fmt(v), str(d)) for s_, v, d in resumed.fits
                ) == sorted((r["start"], r["hyper"], r["draw"]) for r in lost)
  assert sorted(map(str, tables.read_rows(tmp_path / tables.DRAWS_FILE))
                ) == sorted(map(str, drawn))
  # A recorded choice (here off the grid) is judged on as many draws.
  was = _StubCell(tmp_path, truth, draw0)
  got = cells.tune(was, ours_hb, starts, include=(0.7, starts[0]))
  assert got[:2] == (0.5, starts[0])
  assert {d for s_, v, d in was.fits if v == 0.7} == set(
      range(cells.R2R_DRAWS))
  # The oracle's PSNR scores are not noisy estimates: nothing re-scored.
  misranked = lambda st, v: -1.2e-3 if (st.kind, v) == ("pixels", 0.25) else 0
  oracle = _StubCell(tmp_path / "o", truth, misranked)
  (tmp_path / "o").mkdir()
  oracle.refines = lambda method: False
  assert cells.tune(oracle, ours_hb, starts)[:2] == (0.25, starts[0])
  assert {d for _, _, d in oracle.fits} == {0}


def test_blind_selection_killed_anywhere_resumes_on_the_same_path(tmp_path):
  """A run killed after any number of fits, then rerun, fits exactly the
  rest, in the same order, and chooses the same: each step is decided by
  the scores so far, and those are a function of the cached rows.

  Planted as in a tiny SINUSOIDAL run where a finished cell, chosen again,
  measured more: one draw's scores climb towards small β in steps under
  ``TIE_DB``, so one path stops growing early (a tie chooses the interior
  value), and the means peak at the smallest β of that path."""
  starts = (methods.Start("pixels", lr=0.003), methods.Start("zeros"))
  edge = 0.1 / 64  # the smallest β the first run measures

  def db(st, v, peak, at, fall):  # a score in dB, by the start and β
    k = np.log2(v / at)
    return (peak - fall(k)) - (0.0 if st.kind == "pixels" else 3.0)

  single = lambda st, v: db(st, v, 26.72, edge, lambda k: (
      0.004 * k * (1 + k) / 2 if k >= 0 else 0.05 * -k))
  mean = lambda st, v: db(st, v, 26.97, 2 * edge, lambda k: 0.03 * abs(k))
  truth = lambda st, v: 10.0 ** (-mean(st, v) / 10)
  # zeros at β 5: a negative first estimate (first by one draw).
  draw0 = lambda st, v: (-2 * truth(st, v) if (st.kind, v) == ("zeros", 5.0)
                         else 10.0 ** (-single(st, v) / 10) - truth(st, v))
  m = methods.METHODS["ours_heldout"]
  full = _StubCell(tmp_path / "full", truth, draw0)
  (tmp_path / "full").mkdir()
  want = cells.tune(full, m, starts)
  sel = tables.read_rows(tmp_path / "full" / "selection.csv")
  drawn = tables.read_rows(tmp_path / "full" / tables.DRAWS_FILE)
  assert len(sel) + len(drawn) == len(full.fits) > 20

  # Draw 0 is the selection row; the others are recorrupted.csv's.
  written = [("draw" if d else "sel", label, tables._fmt(v), str(d))
             for label, v, d in full.fits]
  for k in range(len(full.fits) + 1):
    folder = tmp_path / f"killed{k}"
    folder.mkdir()
    for name, cols, kind, rows in (
        ("selection.csv", tables.SELECTION_COLUMNS, "sel", sel),
        (tables.DRAWS_FILE, tables.DRAWS_COLUMNS, "draw", drawn)):
      done = {w[1:] for w in written[:k] if w[0] == kind}
      kept = [r for r in rows if (r["start"], r["hyper"],
                                  r.get("draw", "0")) in done]
      assert len(kept) == len(done)
      (folder / name).write_text(",".join(cols) + "\n" + "".join(
          ",".join(r[c] for c in cols) + "\n" for r in kept))
    resumed = _StubCell(folder, truth, draw0)
    got = cells.tune(resumed, m, starts)
    assert got[:3] == want[:3], k
    assert resumed.fits == full.fits[k:], k
  assert want[:2] == (2 * edge, starts[0])
  assert not [r for r in drawn if r["draw"] == "0"]  # read from its score
  # Chosen again with its choice as the recorded one (the same offer):
  # nothing is measured.  Reading the choice first had sent the growth
  # down to the edge before re-scoring, which re-scored the edge.
  again = _StubCell(tmp_path / "full", truth, draw0)
  assert cells.tune(again, m, starts, include=want[:2])[:3] == want[:3]
  assert again.fits == []
  # A score clamped at the floor by an older version (its estimate lost) is
  # fitted again once, as draw 0, and the choice stands.
  legacy = tmp_path / "legacy"
  legacy.mkdir()
  (legacy / tables.DRAWS_FILE).write_text(
      (tmp_path / "full" / tables.DRAWS_FILE).read_text())
  rows = tables.read_rows(tmp_path / "full" / "selection.csv")
  for r in rows:
    if (r["start"], r["hyper"]) == ("zeros", "5"):
      assert float(r["val_score"]) > 100
      r["val_score"] = "100"
  (legacy / "selection.csv").write_text(
      ",".join(tables.SELECTION_COLUMNS) + "\n" + "".join(
          ",".join(r[c] for c in tables.SELECTION_COLUMNS) + "\n"
          for r in rows))
  for fits in ([("zeros", 5.0, 0)], []):
    old = _StubCell(legacy, truth, draw0)
    assert cells.tune(old, m, starts, include=want[:2])[:3] == want[:3]
    assert old.fits == fits
  # A score measured on other images is measured again; its draws, cached
  # for these images, count at once, as they would have on resume.
  stale = tmp_path / "stale"
  stale.mkdir()
  (stale / tables.DRAWS_FILE).write_text(
      (tmp_path / "full" / tables.DRAWS_FILE).read_text())
  text = (tmp_path / "full" / "selection.csv").read_text()
  row = f",{tables._fmt(2 * edge)},pixels@0.003,1 2,"
  assert text.count(row) == 1
  (stale / "selection.csv").write_text(
      text.replace(row, row.replace("1 2", "1 2 3")))
  redo = _StubCell(stale, truth, draw0)
  assert cells.tune(redo, m, starts, include=want[:2])[:3] == want[:3]
  assert redo.fits == [("pixels@0.003", 2 * edge, 0)]


def test_blind_selection_with_no_finite_score_ends_for_the_warning(
    tmp_path):
  """Every recovery diverged (planted NaN estimates): the blind choice
  returns a non-finite score, which run_cell warns about, not a crash."""
  starts = (methods.Start("pixels", lr=0.003), methods.Start("zeros"))
  cell = _StubCell(tmp_path, lambda st, v: float("nan"),
                   lambda st, v: 0.0)
  value, start, score, _ = cells.tune(cell, methods.METHODS["ours_heldout"],
                                      starts)
  assert not np.isfinite(score)
  assert {d for _, _, d in cell.fits} == {0}  # nothing to score again


def test_recorrupted_draws_come_in_antithetic_pairs():
  """Draw 1 flips draw 0's z, draw 2 is a fresh one; draw 0 is the split
  every single-draw score used, and the score is its estimate in dB."""
  from mapflow import holdout
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(3, 4, 4, 1)).astype(np.float32)
  noise = mf.noise.radial((4, 4, 1), 0.2)
  y = x + np.asarray(noise.sample(seed=jax.random.PRNGKey(1),
                                  sample_shape=(3,)))
  ctx = type("Ctx", (), {})()
  ctx.images = cells.Images(x, x, (0, 1, 2), (0, 1, 2))
  ctx.options = cells.Options(methods=("ours_heldout",), seed=5)
  task = cells.Task("radial", "0.2", mf.operators.identity(), noise, y, y)
  cell = cells._Cell(ctx, task, protocol.PROTOCOLS["radial"])
  # A denoiser that returns its input: x̂ = the fitted measurements.
  cell.solve = lambda method, start, value, which: cell.y[which]
  m = methods.METHODS["ours_heldout"]
  st = methods.Start("zeros")
  assert cell.refines(m) and not cell.refines(methods.METHODS["ours"])
  errs = [cell.recorrupted_error(m, st, 1.0, d) for d in (1, 0, 2, 3)]
  y0, y1, y2, y3 = (np.asarray(cell.y[w]) for w in (
      "val_r2r", "val_r2r1", "val_r2r2", "val_r2r3"))
  np.testing.assert_allclose(y1, 2 * y - y0, atol=1e-6)
  np.testing.assert_allclose(y3, 2 * y - y2, atol=1e-6)
  assert np.abs(y2 - y0).max() > 1e-3 and np.abs(y2 - y1).max() > 1e-3
  key = jax.random.fold_in(jax.random.PRNGKey(5), 0x2E2)
  split = holdout.recorrupt(noise, y, key, cells.R2R_ALPHA)
  np.testing.assert_allclose(y0, split.y_fit, atol=1e-6)
  want = float(jnp.mean(holdout.recorrupted_error(split, split.y_fit)))
  assert errs[1] == pytest.approx(want, rel=1e-6)
  assert cell.score(m, st, 1.0) == pytest.approx(-10 * np.log10(want),
                                                 abs=1e-4)


def test_flow_noise_is_scored_blind_by_its_residuals_typicality(
    monkeypatch):
  """Noise that neither factorises nor can be redrawn (a flow's) is
  scored by how typical of the task's noise-only examples the residual
  is (``holdout.residual_typicality``, in dB); without examples a blind
  selection is refused, naming what is missing."""
  from mapflow import holdout
  rng = np.random.default_rng(0)
  flow = mf.flows.linear_gaussian(mf.flows.LinearGaussianConfig((4, 4, 1)))
  noise = mf.noise.from_flow(flow, mf.flows.linear_gaussian_params(
      np.zeros((4, 4, 1)), 0.1 * np.eye(16)))
  x = rng.uniform(size=(3, 4, 4, 1)).astype(np.float32)
  examples = 0.1 * rng.standard_normal((20, 4, 4, 1)).astype(np.float32)
  y = 0.5 * x + 0.1 * rng.standard_normal((3, 4, 4, 1)).astype(np.float32)
  ctx = type("Ctx", (), {})()
  ctx.images = cells.Images(x, x, (0, 1, 2), (0, 1, 2))
  ctx.options = cells.Options(methods=("ours_heldout",), seed=5)
  op = mf.operators.scale(0.5)
  bare = cells.Task("digits", "0.5x+digit", op, noise, y, y,
                    ablation_noise=mf.noise.gaussian(0.1, (4, 4, 1)))
  with pytest.raises(ValueError, match="digits: its noise \\(FlowNoise\\) "
                     "neither factorises.*needs noise_examples"):
    cells.blind_score_kind(bare)
  task = bare._replace(noise_examples=examples)
  assert cells.blind_score_kind(task) == "typical"
  cell = cells._Cell(ctx, task, protocol.PROTOCOLS["digits"])
  m = methods.METHODS["ours_heldout"]
  assert not cell.refines(m)
  for shrink in (1.0, 0.5):
    cell.solve = lambda method, start, value, which: shrink * x
    rate = holdout.noise_log_density_rate(noise, examples)
    gap = holdout.residual_typicality(noise, y, op(shrink * x), rate)
    assert cell.score(m, methods.Start("noise_latent"), 1.0) == pytest.approx(
        -10 * np.log10(float(gap)), abs=1e-4)
  # The truth leaves a typical residual; a shrunken image does not.
  assert holdout.residual_typicality(noise, y, op(x), rate) < gap
  # ours and ours_heldout share one objective: one validation MAP each.
  from mapflow import solve as solve_lib
  fits = []

  def fake_recover(y, **kw):
    fits.append(kw["beta"])
    return type("R", (), {"x": jnp.asarray(y) * 2.0})()

  cell = cells._Cell(ctx, task, protocol.PROTOCOLS["digits"])
  cell.ctx.models = cells.Models(None, None, None, None)
  cell.ctx.options = cells.Options(methods=("ours", "ours_heldout"), seed=5)
  monkeypatch.setattr(solve_lib, "recover", fake_recover)
  st = methods.Start("noise_latent")
  for name in ("ours", "ours_heldout", "ours"):
    cell.solve(methods.METHODS[name], st, 1.0, "val")
  cell.solve(methods.METHODS["ours"], st, 5.0, "val")
  cell.solve(methods.METHODS["ours"], st, 1.0, "test")
  cell.solve(methods.METHODS["ours_heldout"], st, 1.0, "test")
  # The ablation's objective is another (isotropic noise).
  cell.solve(methods.METHODS["ablation"], methods.Start("measurements"), 1.0,
             "val")
  assert fits == [1.0, 5.0, 1.0, 1.0, 1.0]
  # The other protocols' blind scores are unchanged.
  assert cells.blind_score_kind(cells.Task(
      "radial", "0.2", mf.operators.identity(),
      mf.noise.radial((4, 4, 1), 0.2), y, y)) == "recorrupted"


def test_the_two_best_starts_grids_grow(tmp_path):
  """A start whose peak lies between the base grid's values (β 0.2, 20 dB;
  18.3 dB at β 0.1 on the base grid) wins over the start whose grid alone
  would have been refined (19.2 dB on the base grid, 19.99 grown), as in
  RADIAL s = 0.8's ablation; a third start's grid stays as it was."""
  a, b, c = (methods.Start("zeros"), methods.Start("zeros", steps=200),
             methods.Start("pixels"))
  peaks = {a: (0.2, 19.99, 0.8), b: (0.2, 20.04, 1.75), c: (0.2, 21.0, 9.0)}

  def score(start, v):
    at, top, width = peaks[start]
    return top - width * abs(np.log2(v / at))

  class Cell(_StubCell):
    def refines(self, method):
      return False

    def score(self, method, start, value):
      self.fits.append((start.label, value, 0))
      return score(start, value)

  cell = Cell(tmp_path, None, None)
  abl = methods.METHODS["ablation"]
  value, start, best, scores = cells.tune(cell, abl, (a, b, c))
  assert (value, start) == (0.2, b) and best == pytest.approx(20.04)
  assert methods.GROWN_STARTS == 2
  # The third start's grid stays the base one (its hidden peak is missed:
  # two is a budget, not a guarantee).
  assert set(scores[c]) == set(abl.grid.values)
  assert {0.2} < set(scores[a]) and {0.2} < set(scores[b])


def test_a_method_choosing_ours_configuration_reads_its_test_rows(tmp_path):
  """ours_heldout at ours's recorded configuration is the same computation:
  its test PSNRs are read from ours's complete rows, never from another
  method's or an incomplete cell's."""
  M = methods.METHODS
  assert cells.same_test_recoveries(M["ours"], M["ours_heldout"])
  for other in ("ablation", "asim", "bora", "bm3d"):
    assert not cells.same_test_recoveries(M["ours_heldout"], M[other])
  ctx = type("Ctx", (), {})()
  ctx.results = tables.ResultTable(tmp_path / "results.csv",
                                   tables.RESULT_COLUMNS, tables.RESULT_KEY)
  task = type("Task", (), {"experiment": "radial", "setting": "0.4"})
  ids, n_test = ["11", "12", "digit0"], 2
  ctx.results.add([dict(experiment="radial" if i != "digit0" else
                        "radial_ood", setting="0.4", method=m, hyper=h,
                        image=i, psnr=v)
                   for m, h, v0 in (("ours", "1|pixels@0.01", 25.0),
                                    ("ablation", "0.5|zeros", 20.0))
                   for i, v in zip(ids, (v0, v0 + 1, v0 + 2))])
  proto = protocol.PROTOCOLS["radial"]
  twin = cells._twin_psnrs(ctx, task, proto, M["ours_heldout"],
                           "1|pixels@0.01", ids, n_test)
  assert twin == ("ours", {"11": 25.0, "12": 26.0, "digit0": 27.0})
  for hyper in ("0.5|pixels@0.01", "0.5|zeros"):
    assert cells._twin_psnrs(ctx, task, proto, M["ours_heldout"], hyper,
                             ids, n_test) is None
  # A cell whose rows do not cover this run's images is not read.
  assert cells._twin_psnrs(ctx, task, proto, M["ours_heldout"],
                           "1|pixels@0.01", ids + ["13"], 3) is None
