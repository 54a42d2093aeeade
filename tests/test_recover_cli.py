"""The experiment command lines run end to end on tiny configurations."""

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mapflow as mf
from mapflow import data
from recover.paper import methods as methods_lib
from recover.paper import protocol, tables

# Bora et al. shortened, two validation and two test images.
QUICK = ["--bora-steps", "2", "--bora-restarts", "1", "--num-val", "2",
         "--num-test", "2"]


# RADIAL runs the same code with another std map: under -m slow.
@pytest.mark.parametrize("kind", [
    "sinusoidal", pytest.param("radial", marks=pytest.mark.slow)])
def test_denoising_cli_end_to_end(tiny_prior, tmp_path, kind):
  from recover.denoising import main
  args = ["--out", str(tmp_path), "--prior", tiny_prior, "--inits",
          "zeros:2", "--scales", "0.5"] + QUICK
  main(kind, args)
  rows = tables.read_rows(tmp_path / "results.csv")
  assert list(rows[0]) == tables.RESULT_COLUMNS
  methods = {r["method"] for r in rows}
  assert methods == set(protocol.PROTOCOLS[kind].methods)
  # 2 test images, and the 6 out-of-distribution ones reported apart.
  assert sum(r["experiment"] == kind for r in rows) == 2 * len(methods)
  ood = [r for r in rows if r["experiment"] == f"{kind}_ood"]
  assert len(ood) == 6 * len(methods)
  assert {r["image"] for r in ood} == {"digit0", "digit1", "digit2",
                                       "china", "flower", "cartoon"}
  assert (tmp_path / "figures" / f"{kind}_0.5.png").is_file()
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert {s["method"] for s in summary} == methods
  # Every chosen value is interior to what its method tried.
  from recover import report
  assert report.folder_edges(tmp_path) == []
  # Ours chosen without ground truth sits beside ours in the report.
  gaps = report.heldout_gaps(tables.per_image(tmp_path / "results.csv"))
  assert [g[:2] for g in gaps] == [(kind, "0.5")]
  sel = _selection(tmp_path)
  val_ids = {r["val_images"] for r in sel}
  want = " ".join(str(i) for i in protocol.protocol_indices()[0][:2])
  assert val_ids == {want}
  assert not (tmp_path / ".lock").exists()  # released
  # A rerun finds every cell done and changes nothing.
  before = [(tmp_path / f).read_text() for f in ("results.csv",
                                                  "selection.csv")]
  main(kind, args)
  assert [(tmp_path / f).read_text() for f in ("results.csv",
                                               "selection.csv")] == before


def test_start_is_chosen_with_the_hyperparameter(tiny_prior, tmp_path):
  from recover.denoising import main
  args = ["--out", str(tmp_path), "--prior", tiny_prior, "--num-val", "2",
          "--num-test", "2", "--scales", "0.5", "--no-ood", "--no-figures",
          "--methods", "ours,ablation,asim", "--inits", "measurements:2,"
          "zeros:2"]
  main("sinusoidal", args)
  sel = _selection(tmp_path)
  rows = tables.read_rows(tmp_path / "results.csv")
  for method in ("ours", "ablation", "asim"):
    mine = [r for r in sel if r["method"] == method]
    grid = methods_lib.METHODS[method].grid.values
    for st in ("measurements:2", "zeros:2"):
      tried = {float(r["hyper"]) for r in mine if r["start"] == st}
      assert set(grid) <= tried, (method, st, tried)
    top = max(float(r["val_score"]) for r in mine)
    chosen = {r["hyper"] for r in rows if r["method"] == method}
    assert len(chosen) == 1
    value, start = tables.split_hyper(chosen.pop())
    score = next(float(r["val_score"]) for r in mine
                 if r["start"] == start and float(r["hyper"]) == float(value))
    assert score >= top - methods_lib.TIE_DB
  with pytest.raises(SystemExit, match="--inits: got start 'middle'"):
    main("sinusoidal", args[:-1] + ["measurements,middle"])
  # The folder records its prior; a rerun with another is refused.
  run = json.loads((tmp_path / "run.json").read_text())
  assert run["prior"] == tiny_prior
  other = tmp_path / "other_prior"
  import shutil
  shutil.copytree(tiny_prior, other)
  with pytest.raises(SystemExit, match="--prior: got .* were made with"):
    main("sinusoidal", args[:3] + [str(other)] + args[4:])
  assert not (tmp_path / ".lock").exists()
  # So does a library whose starts' default steps differ: a cached
  # "zeros" score would then mean another budget.
  assert run["start_steps"] == methods_lib.BASE_STEPS
  run["start_steps"] = 50
  (tmp_path / "run.json").write_text(json.dumps(run))
  with pytest.raises(SystemExit, match="default steps .* got 100, but .* "
                     "were made with 50"):
    main("sinusoidal", args)


def _selection(folder):
  return tables.read_rows(folder / "selection.csv")


def _chosen_starts(sel, method):
  """The starts a method chose among."""
  return {r["start"] for r in sel if r["method"] == method}


def test_isotropic_start_needs_the_same_budget_for_everyone(tiny_prior,
                                                            tmp_path):
  """The continuation start spends twice its steps.  Offered alone it
  would give ours a budget no other flow method gets, and is refused;
  with a start of that budget for every method it runs, for ours (and ours
  chosen without ground truth) only."""
  from recover.denoising import main
  base = ["--out", str(tmp_path), "--prior", tiny_prior, "--num-val", "2",
          "--num-test", "2", "--scales", "0.5", "--no-ood", "--no-figures",
          "--methods", "ours,ours_heldout,ablation,asim", "--inits"]
  with pytest.raises(SystemExit, match="ablation would lack"):
    main("radial", base + ["zeros:2,isotropic:2"])
  main("radial", base + ["zeros:2,isotropic:1"])
  sel = _selection(tmp_path)
  starts = lambda m: _chosen_starts(sel, m)
  assert starts("ours") == starts("ours_heldout") == {"zeros:2",
                                                      "isotropic:1"}
  # Under Gaussian noise ours_heldout scores by recorrupted measurements:
  # an estimated PSNR in dB.
  blind = [float(r["val_score"]) for r in sel
           if r["method"] == "ours_heldout"]
  assert blind and all(5 < v < 60 for v in blind)
  # Its best few were scored again over more draws, its choice among them.
  from recover.paper import cells, tables
  drawn = tables.read_rows(tmp_path / tables.DRAWS_FILE)
  again = {(r["hyper"], r["start"]) for r in drawn}
  assert {r["method"] for r in drawn} == {"ours_heldout"}
  assert len(drawn) == len(again) * (cells.R2R_DRAWS - 1)
  assert len(again) >= cells.R2R_REFINED
  chosen = {r["hyper"] for r in tables.read_rows(tmp_path / "results.csv")
            if r["method"] == "ours_heldout"}
  assert len(chosen) == 1
  value, start = tables.split_hyper(chosen.pop())
  assert (tables._fmt(float(value)), start) in again
  assert starts("ablation") == starts("asim") == {"zeros:2"}
  assert all(math.isfinite(float(r["val_score"])) for r in sel)


def test_pixels_start_is_offered_to_every_flow_method(tiny_prior, tmp_path):
  """``--inits zeros,pixels``: ours, the ablation and Asim et al. (its loss
  at z = G^-1(x)) may all move the image itself."""
  from recover.denoising import main
  main("radial", ["--out", str(tmp_path), "--prior", tiny_prior,
                  "--num-val", "2", "--num-test", "2", "--scales", "0.5",
                  "--no-ood", "--no-figures", "--methods",
                  "ours,ablation,asim", "--inits", "zeros:2,pixels:2"])
  sel = _selection(tmp_path)
  for m in ("ours", "ablation", "asim"):
    assert _chosen_starts(sel, m) == {"zeros:2", "pixels:2"}
  assert all(math.isfinite(float(r["val_score"])) for r in sel)


def test_a_recorded_cell_is_chosen_again_when_more_is_offered(
    tiny_prior, tmp_path, monkeypatch):
  """A rerun with the same offer measures nothing; one that offers a
  better start measures only the new configurations and replaces the
  cells whose choice changed, each image's row once; one with a narrower
  offer keeps what was chosen under the wider one."""
  from recover.denoising import main
  from recover.paper import cells
  measured = []
  score = cells._Cell.score
  monkeypatch.setattr(cells._Cell, "score", lambda self, m, st, v: (
      measured.append((m.name, st.label, v)) or score(self, m, st, v)))
  base = ["--out", str(tmp_path), "--prior", tiny_prior, "--num-val", "2",
          "--num-test", "2", "--scales", "0.5", "--no-ood", "--no-figures",
          "--methods", "ours,asim", "--inits"]
  main("sinusoidal", base + ["zeros:2"])
  assert measured and {s for _, s, _ in measured} == {"zeros:2"}
  results = (tmp_path / "results.csv").read_bytes()
  measured.clear()
  main("sinusoidal", base + ["zeros:2"])
  assert measured == []
  assert (tmp_path / "results.csv").read_bytes() == results
  # From the measured pixels, two steps of an untrained prior beat two
  # steps from its z = 0 (a flat grey) by far.
  main("sinusoidal", base + ["zeros:2,pixels:2"])
  assert measured and {s for _, s, _ in measured} == {"pixels:2"}
  sel = _selection(tmp_path)
  rows = tables.read_rows(tmp_path / "results.csv")
  assert len(rows) == 2 * 2  # two methods, two images, each once
  for m in ("ours", "asim"):
    assert _chosen_starts(sel, m) == {"zeros:2", "pixels:2"}
    hypers = {r["hyper"] for r in rows if r["method"] == m}
    assert len(hypers) == 1 and hypers.pop().endswith("|pixels:2"), m
  chosen = (tmp_path / "results.csv").read_bytes()
  measured.clear()
  main("sinusoidal", base + ["zeros:2"])  # narrower: nothing changes
  assert measured == []
  assert (tmp_path / "results.csv").read_bytes() == chosen
  # Fewer test images than the folder records: a cell that would change
  # is refused rather than left with two choices.
  with pytest.raises(ValueError, match="does not cover"):
    main("sinusoidal", base[:-3] + ["--num-test", "1", "--methods", "ours",
                                    "--inits", "zeros:2,pixels:2,pixels:3"])
  # A newly offered start that only ties the recorded choice (its cached
  # scores planted here, peaking 0.005 dB above it) leaves the cell as it
  # is; one that beats it by more replaces it.
  rows = tables.read_rows(tmp_path / "results.csv")
  was = next(r["hyper"] for r in rows if r["method"] == "ours")
  value, start = tables.split_hyper(was)
  sel = _selection(tmp_path)
  top = next(float(r["val_score"]) for r in sel if r["method"] == "ours"
             and r["start"] == start and float(r["hyper"]) == float(value))
  path = tmp_path / "selection.csv"
  for gain, chosen in ((0.005, was), (0.05, "1|pixels:4")):
    lines = path.read_text().splitlines()
    lines = [l for l in lines if ",pixels:4," not in l]
    lines += [f"sinusoidal,0.5,ours,{v:g},pixels:4,{sel[0]['val_images']},"
              f"{top + (gain if v == 1 else -1.0):.6g}"
              for v in (0.1, 0.5, 1, 2, 5, 10)]
    path.write_text("\n".join(lines) + "\n")
    measured.clear()
    main("sinusoidal", base[:-3] + ["--methods", "ours", "--inits",
                                    "zeros:2,pixels:2,pixels:4"])
    assert measured == []
    got = {r["hyper"] for r in tables.read_rows(tmp_path / "results.csv")
           if r["method"] == "ours"}
    assert got == {chosen}, gain


def test_a_start_may_carry_its_own_learning_rate(tiny_prior, tmp_path):
  """``NAME@LR`` runs that start with Adam at LR.  At LR = 1e-12 nothing
  moves, so every β (γ) of that start scores the same on validation, which
  the same start at the default learning rate does not."""
  from recover.denoising import main
  main("radial", ["--out", str(tmp_path), "--prior", tiny_prior,
                  "--num-val", "2", "--num-test", "2", "--scales",
                  "0.5", "--no-ood", "--no-figures", "--methods",
                  "ours,asim", "--inits",
                  "pixels:3,pixels@1e-12:3,measurements:3,"
                  "measurements@1e-12:3"])
  sel = _selection(tmp_path)
  def scores(method, start):
    return [float(r["val_score"]) for r in sel if r["method"] == method
            and r["start"] == start]
  for method in ("ours", "asim"):
    for start in ("pixels", "measurements"):
      frozen = scores(method, f"{start}@1e-12:3")
      assert len(frozen) >= 5 and np.ptp(frozen) < 1e-4, (method, frozen)
      assert np.ptp(scores(method, f"{start}:3")) > 1e-3, method


def test_figure_keeps_methods_from_earlier_runs(tiny_prior, tmp_path):
  """A rerun of some methods into a folder redraws each cell's figure with
  every method recorded there, not only those it ran."""
  from recover.denoising import main
  from PIL import Image
  common = ["--out", str(tmp_path), "--prior", tiny_prior, "--inits",
            "zeros:2", "--num-val", "2", "--num-test", "2", "--scales",
            "0.5"]
  main("sinusoidal", common + ["--methods", "ours"])
  fig = tmp_path / "figures" / "sinusoidal_0.5.png"
  first = np.asarray(Image.open(fig))
  main("sinusoidal", common + ["--methods", "ablation"])
  txt = (tmp_path / "figures" / "sinusoidal_0.5.txt").read_text()
  assert txt.strip() == "columns: truth, measurement, ours, ablation"
  second = np.asarray(Image.open(fig))
  assert second.shape[1] > first.shape[1]  # one more column
  # The kept column is the same picture as before.
  np.testing.assert_array_equal(second[:, :first.shape[1]], first)


@pytest.mark.slow  # 15-50 s on an AVX2-only 2-core CPU
def test_one_bit_cli_end_to_end(tiny_prior, tmp_path):
  from recover.one_bit import main
  main(["--out", str(tmp_path), "--prior", tiny_prior, "--inits",
        "zeros:2", "--ms", "50,100", "--scale", "1", "--scales", "0.5",
        "--m", "100", "--no-ood"] + QUICK)
  rows = tables.read_rows(tmp_path / "results.csv")
  assert list(rows[0]) == tables.RESULT_COLUMNS
  settings = {r["setting"] for r in rows}
  assert settings == {"m=50,s=1", "m=100,s=1", "m=100,s=0.5"}
  assert {r["method"] for r in rows} == set(
      protocol.PROTOCOLS["one_bit"].methods)
  assert (tmp_path / "summary.json").is_file()
  assert (tmp_path / "figures" / "one_bit_m50_s1.png").is_file()
  # Signs are not Gaussian: ours_heldout scores by held-out rows, in dB of
  # a squared prediction error of signs (at most 4: -6.02 dB).
  blind = [float(r["val_score"]) for r in _selection(tmp_path)
           if r["method"] == "ours_heldout"]
  assert blind and all(-10 * math.log10(4) - 1e-3 <= v < 100 for v in blind)
  assert not (tmp_path / tables.DRAWS_FILE).exists()


@pytest.mark.slow  # 15-50 s on an AVX2-only 2-core CPU
def test_digit_noise_cli_end_to_end(tiny_prior, tmp_path):
  from recover.digit_noise import main
  args = ["--out", str(tmp_path), "--prior", tiny_prior, "--noise-prior",
          tiny_prior, "--inits", "measurements:2,noise_latent:2"] + QUICK
  main(args)
  rows = tables.read_rows(tmp_path / "results.csv")
  # Digit noise has no out-of-distribution images; a rerun finds every
  # method done and changes nothing, and another seed is refused.
  before = (tmp_path / "results.csv").read_text()
  main(args)
  assert (tmp_path / "results.csv").read_text() == before
  with pytest.raises(ValueError, match="--seed: got 1, but the results"):
    main(args + ["--seed", "1"])
  assert {r["method"] for r in rows} == set(
      protocol.PROTOCOLS["digits"].methods)
  assert all(r["setting"] == "0.5x+digit" for r in rows)
  assert all(float(r["psnr"]) > 0 for r in rows)
  # Ours also tries moving the digit flow's latent; the others cannot.
  sel = _selection(tmp_path)
  starts = lambda m: _chosen_starts(sel, m)
  assert starts("ours") == starts("ours_heldout") == {"measurements:2",
                                                     "noise_latent:2"}
  assert starts("ablation") == starts("asim") == {"measurements:2"}
  info = json.loads((tmp_path / "run.json").read_text())
  assert info["blind_selection"] == "residual typicality (dB)"


def test_noise_latent_start_needs_flow_noise(tiny_prior, tmp_path):
  from recover.denoising import main
  with pytest.raises(ValueError, match="no method of sinusoidal can take the "
                     "start 'noise_latent:2'.*flow noise"):
    main("sinusoidal", ["--out", str(tmp_path), "--prior", tiny_prior,
                        "--num-val", "2", "--num-test", "2",
                        "--scales", "0.5", "--no-ood", "--methods", "ours",
                        "--inits", "measurements:2,noise_latent:2"])


def test_demo_runs_offline_on_shipped_images(tiny_prior, tmp_path,
                                             monkeypatch, capsys):
  """The demo runs its three tasks offline on the shipped images, with the
  validated choices of a results folder.  Here ours' SINUSOIDAL choice is
  its continuation start (the ablation's MAP, then ours), which runs as in
  the experiments: the first half under the isotropic noise of the same
  average variance."""
  from recover.demo import demo_cells, main
  from recover.paper import cells
  first = []
  half = cells.ablation_latents
  monkeypatch.setattr(cells, "ablation_latents", lambda y, **kw: (
      first.append(kw) or half(y, **kw)))
  res = tmp_path / "results"
  # The cells of the settings the demo runs (--m 64).
  for folder, exp, setting in demo_cells(m=64).values():
    (res / folder).mkdir(parents=True)
    ours = "1|isotropic" if exp == "sinusoidal" else "1|zeros"
    rows = [f'{exp},"{setting}",{m},{h},1,20.0' for m, h in (
        ("ours", ours), ("asim", "0.5|zeros"), ("bora", "0.1"),
        ("bm3d", "0.5"))]
    (res / folder / "results.csv").write_text(
        "experiment,setting,method,hyper,image,psnr\n" + "\n".join(rows)
        + "\n")
  out = tmp_path / "out"
  main(["--out", str(out), "--results", str(res), "--prior", tiny_prior,
        "--noise-prior", tiny_prior, "--steps", "2", "--bora-steps", "2",
        "--images", "2", "--m", "64", "--full-compile", "--cache", "none"])
  rows = json.loads((out / "psnr.json").read_text())
  assert [r["task"] for r in rows] == ["1-bit CS", "sinusoidal",
                                       "digit noise"]
  assert all(r[m] > 0 for r in rows for m in ("ours", "asim", "bora"))
  assert (out / "demo.png").is_file()
  printed = capsys.readouterr().out
  assert "PSNR (dB)" in printed
  # bench's first_minute section reads the demo's own clock from this line.
  from bench.sections import _DEMO_CLOCK
  assert 0 <= float(_DEMO_CLOCK.search(printed).group(1)) < 3600
  [kw] = first  # the sinusoidal task's ours only
  assert kw["beta"] == 1.0 and kw["start"].steps == 2
  assert isinstance(kw["noise"], mf.noise.IsotropicGaussian)
  want = np.sqrt(np.mean(np.asarray(
      mf.noise.sinusoidal((28, 28, 1), 0.4).std_map) ** 2))
  assert np.isclose(float(kw["noise"].sigma), want)


def test_subpixel_cli_end_to_end(tiny_prior, tmp_path):
  from recover.subpixel import main
  main(["--out", str(tmp_path), "--prior", tiny_prior, "--inits",
        "zeros:2"] + QUICK)
  rows = tables.read_rows(tmp_path / "results.csv")
  assert {r["method"] for r in rows} == set(
      protocol.PROTOCOLS["subpixel"].methods)
  assert all(r["setting"] == "keep=0.75" for r in rows)
  # Under a mask ours_heldout holds pixels out (a recorrupted error would
  # see only the kept ones), scored in dB, with no recorrupted draws.
  blind = [float(r["val_score"]) for r in _selection(tmp_path)
           if r["method"] == "ours_heldout"]
  assert blind and all(0 < v < 60 for v in blind)
  assert not (tmp_path / tables.DRAWS_FILE).exists()


def test_demo_reads_its_choices_from_the_results(tmp_path):
  """recover.demo takes each method's value and start from the task's
  results folder, the fair-protocol one before its v1 run, and reads the
  prior from that folder's run.json; the committed results give a choice
  for every method of every task."""
  from recover import demo
  choices = demo.validated_choices()
  assert set(choices) == set(demo.DEMO_CELLS)
  for task, ch in choices.items():
    assert set(ch) >= {"ours", "asim", "bora"}, task
    assert ch["ours"].start is not None and ch["bora"].start is None
  # A synthetic main folder wins over the v1 one.
  for where, beta in (("sinusoidal", 2.0), ("v1/sinusoidal", 7.0)):
    d = tmp_path / where
    d.mkdir(parents=True)
    rows = [f"sinusoidal,0.4,{m},{h},1,20.0" for m, h in (
        ("ours", f"{beta}|pixels@0.01"), ("asim", "0.5|zeros"),
        ("bora", "0.1"), ("bm3d", "0.5"))]
    (d / "results.csv").write_text(
        "experiment,setting,method,hyper,image,psnr\n" + "\n".join(rows)
        + "\n")
  (tmp_path / "sinusoidal" / "run.json").write_text('{"prior": "p2"}')
  for folder, exp, setting in demo.DEMO_CELLS.values():
    if folder != "sinusoidal":
      d = tmp_path / folder
      d.mkdir()
      rows = [f"{exp},{setting!r},{m},1|zeros,1,20.0".replace("'", '"')
              for m in ("ours", "asim")] + [
                  f"{exp},\"{setting}\",{m},0.1,1,20.0"
                  for m in ("bora", "bm3d")[:1 + (exp == "digits")]]
      (d / "results.csv").write_text(
          "experiment,setting,method,hyper,image,psnr\n" + "\n".join(rows)
          + "\n")
  got = demo.validated_choices(tmp_path)
  ours = got["sinusoidal"]["ours"]
  assert (ours.value, ours.start, ours.source) == (2.0, "pixels@0.01",
                                                   "sinusoidal")
  assert got["sinusoidal"]["bm3d"].value == 0.5
  assert demo.results_prior(tmp_path, "sinusoidal") == "p2"
  # A main cell still being run (BM3D not yet in) is not read: v1's is.
  (tmp_path / "v1" / "sinusoidal" / "selection.csv").write_text(
      "experiment,setting,method,hyper,start,val_images,val_score\n"
      "sinusoidal,0.4,bm3d,0.05,,1,20.0\n")
  f = tmp_path / "sinusoidal" / "results.csv"
  f.write_text("".join(l for l in f.read_text().splitlines(True)
                       if ",bm3d," not in l))
  ours = demo.validated_choices(tmp_path)["sinusoidal"]["ours"]
  assert (ours.value, ours.source) == (7.0, "v1/sinusoidal")
  # v1 recorded BM3D's σ itself (its grid began at 0.1 x the reference).
  got = demo.validated_choices(tmp_path)["sinusoidal"]["bm3d"]
  assert got.value == pytest.approx(1.0)
  assert demo.results_prior(tmp_path, "v1/sinusoidal") == \
      "fashion_mnist_realnvp"
  with pytest.raises(FileNotFoundError, match="--results"):
    demo.validated_choices(tmp_path / "nowhere")


def test_report_refuses_a_damaged_table_and_an_out_among_the_results(
    tmp_path, capsys):
  """A torn or non-numeric row had ended in a traceback, and an --out
  naming an experiment's results.csv had replaced it with Markdown."""
  from recover import report
  folder = tmp_path / "sinusoidal"
  folder.mkdir()
  good = ("experiment,setting,method,hyper,image,psnr\n"
          "sinusoidal,0.1,bm3d,0.1,0,30.5\n")
  for body, match in (
      (good + "sinusoidal,0.1,ours,0.5|zeros,0,abc\n",
       r"--results: .*results\.csv: row \(.*method=ours.*\): psnr 'abc' "
       "is not a number"),
      (good + "sinusoidal,0.1,ours,0.5|zeros,0\n",
       r"--results: .*results\.csv: line 3 has 5 fields, expected 6"),
      ("experiment,setting\nsinusoidal,0.1\n", r"--results: .*has columns")):
    (folder / "results.csv").write_text(body)
    with pytest.raises(SystemExit, match=match):
      report.main(["--results", str(tmp_path), "--out",
                   str(tmp_path / "R.md")])
  (folder / "results.csv").write_text(good)
  for out in (folder / "results.csv", folder / "R.md",
              tmp_path / "selection.csv"):
    with pytest.raises(SystemExit) as e:
      report.main(["--results", str(tmp_path), "--out", str(out)])
    assert e.value.code == 2
    assert "inside an experiment's folder" in capsys.readouterr().err
  assert (folder / "results.csv").read_text() == good
  assert not (tmp_path / "R.md").exists()


def test_report_computes_the_claims_from_results_csv(tmp_path):
  """Synthetic SINUSOIDAL curves where ours at noise 2s scores what BM3D
  scores at s: the report's claim must read 2x, and a hyperparameter chosen
  with its start renders without splitting a Markdown cell."""
  import math
  from recover import report
  folder = tmp_path / "sinusoidal"
  folder.mkdir()
  lines = ["experiment,setting,method,hyper,image,psnr"]
  for s in (0.1, 0.2, 0.4, 0.8, 1.6):
    for i, jitter in enumerate((-0.5, 0.0, 0.5)):
      bm3d = 30.0 - 5.0 * math.log2(s / 0.1) + jitter
      ours = 30.0 - 5.0 * math.log2(s / 0.2) + jitter
      lines.append(f"sinusoidal,{s},bm3d,0.1,{i},{bm3d}")
      lines.append(f"sinusoidal,{s},ours,0.5|zeros,{i},{ours}")
  (folder / "results.csv").write_text("\n".join(lines) + "\n")
  report.main(["--results", str(tmp_path), "--out", str(tmp_path / "R.md")])
  claims = json.loads((tmp_path / "headline.json").read_text())["claims"]
  ours = next(c for c in claims if "ours tolerates" in c["claim"])
  assert abs(ours["measured"] - 2.0) < 0.05 and ours["met"] is False
  # Each image shifts both curves alike, so every resample reads 2x.
  assert abs(ours["lo"] - 2.0) < 0.05 and abs(ours["hi"] - 2.0) < 0.05
  md = (tmp_path / "R.md").read_text()
  row = next(l for l in md.splitlines() if l.startswith("| 0.8 |"))
  assert "(0.5, from zeros)" in row and row.count("|") == 4



def test_report_sets_each_cell_beside_the_training_mean_image(tmp_path):
  """The training images' mean, one image whatever y is, scored on a
  cell's reported images: a method below it is named."""
  from recover import report
  try:
    train = data.load("fashion_mnist", "train").astype(np.float64) / 255
    test = data.load("fashion_mnist", "test").astype(np.float64) / 255
  except data.DatasetNotFoundError:
    pytest.skip("Fashion-MNIST IDX files not installed")
  ids = [3, 7, 11]
  mse = [np.mean((test[i] - train.mean(0)) ** 2) for i in ids]
  floor = float(np.mean([10 * np.log10(1 / e) for e in mse]))
  folder = tmp_path / "digit_noise"
  folder.mkdir()
  lines = ["experiment,setting,method,hyper,image,psnr"]
  for i in ids:
    lines += [f"digits,0.5x+digit,ours,1|zeros,{i},{floor - 0.3}",
              f"digits,0.5x+digit,bora,1,{i},{floor + 0.2}"]
  (folder / "results.csv").write_text("\n".join(lines) + "\n")
  report.main(["--results", str(tmp_path), "--out", str(tmp_path / "R.md")])
  got = json.loads((tmp_path / "headline.json").read_text())
  (row,) = got["training_mean_floor"]
  assert row["psnr"] == pytest.approx(floor, abs=1e-6)
  assert (row["images"], row["best"], row["below"]) == (3, "bora", ["ours"])
  md = (tmp_path / "R.md").read_text()
  assert f"| digits | 0.5x+digit | {floor:.2f} | bora {floor + 0.2:.2f} | ours |" in md

def test_report_flags_cells_chosen_under_a_narrower_offer(tmp_path):
  """A reported flow cell whose selection.csv lacks a start the protocol
  now offers it is listed (with what it lacks) until a rerun scores it."""
  from recover import report
  from recover.paper.methods import METHODS, offers
  offered = [s.label for s in offers(METHODS["ours"],
                                     protocol.PROTOCOLS["radial"].starts)]
  assert "isotropic" in offered
  (tmp_path / "results.csv").write_text(
      "experiment,setting,method,hyper,image,psnr\n"
      "radial,0.1,ours,1|zeros,7,20.0\nradial_ood,0.1,ours,1|zeros,a,9.0\n"
      "radial,0.1,bm3d,0.5,7,19.0\n")
  sel = ["experiment,setting,method,hyper,start,val_images,val_score",
         "radial,0.1,ours,1,zeros,1 2,20.0", "radial,0.1,bm3d,0.5,,1 2,19.0"]
  (tmp_path / "selection.csv").write_text("\n".join(sel) + "\n")
  got = report.folder_narrow_offers(tmp_path)
  assert got == [("radial", "0.1", "ours",
                  [s for s in offered if s != "zeros"], None)]
  sel += [f"radial,0.1,ours,1,{s},1 2,20.0" for s in offered]
  (tmp_path / "selection.csv").write_text("\n".join(sel) + "\n")
  assert report.folder_narrow_offers(tmp_path) == []
  # Chosen from a start outside the protocol (a probe's): listed too.
  res = (tmp_path / "results.csv").read_text()
  (tmp_path / "results.csv").write_text(res.replace("1|zeros", "1|zeros:7"))
  assert report.folder_narrow_offers(tmp_path) == [
      ("radial", "0.1", "ours", [], "zeros:7")]


def test_report_merges_a_supplementary_folder_with_its_main_one(tmp_path):
  """A supplementary SINUSOIDAL run of ours alone, at 4x BM3D's tolerance
  for s <= 0.8; s = 1.6 is only in the main folder (ours at 2x there).  The
  supplementary claim is computed on the merged curves against the main
  folder's BM3D, the main claim still reads 2x, and borrowed cells are
  marked."""
  import math
  from recover import report
  main_dir = tmp_path / "v1" / "sinusoidal"
  sup_dir = tmp_path / "v1" / "sinusoidal_iso"
  main_dir.mkdir(parents=True)
  sup_dir.mkdir()
  head = "experiment,setting,method,hyper,image,psnr"
  main_lines, sup_lines = [head], [head]
  scales = (0.1, 0.2, 0.4, 0.8, 1.6)
  for s in scales:
    for i, jitter in enumerate((-0.5, 0.0, 0.5)):
      bm3d = 30.0 - 5.0 * math.log2(s / 0.1) + jitter
      main_lines.append(f"sinusoidal,{s},bm3d,0.1,{i},{bm3d}")
      ours = 30.0 - 5.0 * math.log2(s / 0.2) + jitter
      main_lines.append(f"sinusoidal,{s},ours,0.5,{i},{ours}")
      if s != scales[-1]:
        better = 30.0 - 5.0 * math.log2(s / 0.4) + jitter
        sup_lines.append(f"sinusoidal,{s},ours,0.1|isotropic,{i},{better}")
  (main_dir / "results.csv").write_text("\n".join(main_lines) + "\n")
  (sup_dir / "results.csv").write_text("\n".join(sup_lines) + "\n")
  report.main(["--results", str(tmp_path), "--out", str(tmp_path / "R.md")])
  head = json.loads((tmp_path / "headline.json").read_text())
  mine = lambda cl: next(c for c in cl if "std ours tolerates" in c["claim"])
  base = next(x for x in head["supplementary"]
              if x["folder"] == "v1/sinusoidal")
  assert abs(mine(base["claims"])["measured"] - 2.0) < 0.05
  sup = next(x for x in head["supplementary"]
             if x["folder"] == "v1/sinusoidal_iso")
  assert sup["varies"] == "sinusoidal"
  # BM3D's 30, 25, 20 and 15 dB (s = 0.1-0.8) are reached by the merged
  # curve at 4x, 4x, 2^1.5 x (midway between 0.8 and the borrowed 1.6, in
  # log s) and 2x (the borrowed point); 10 dB lies below it.
  expected = (4 * 4 * 2 ** 1.5 * 2) ** 0.25
  assert abs(mine(sup["claims"])["measured"] - expected) < 1e-6
  md = (tmp_path / "R.md").read_text()
  part = md.split("## Supplementary: `v1/sinusoidal_iso`")[1]
  rows = [l for l in part.splitlines() if l.startswith("| 0.") or
          l.startswith("| 1.6 |")]
  assert len(rows) == len(scales)
  # BM3D everywhere and ours at 1.6 come from the main folder.
  assert rows[0].count(report.BORROWED) == 1
  assert rows[-1].count(report.BORROWED) == 2
  assert "from isotropic" in rows[0]


def test_random_start_draws_restarts_at_the_given_std(tiny_prior, tmp_path):
  """``random`` is offered to every flow method.  Its draws have std
  ``--init-std``: at 1e-6 they sit at z = 0, so with one restart every β
  (γ) scores as the ``zeros`` start does; at std 1 they do not."""
  from recover.one_bit import main

  def run(out, std):
    main(["--out", str(out), "--prior", tiny_prior,
          "--num-val", "2", "--num-test", "2", "--ms", "100", "--scales",
          "", "--m", "100", "--no-ood", "--no-figures", "--methods",
          "ours,ablation,asim", "--inits", "zeros:3,random:3", "--restarts",
          "1", "--init-std", std])
    sel = _selection(out)
    # The values both starts tried (the grids may grow differently).
    def scores(method, start):
      return {float(r["hyper"]): float(r["val_score"]) for r in sel
              if r["method"] == method and r["start"] == start}
    def pair(method, start):
      a, b = scores(method, start + ":3"), scores(method, "zeros:3")
      both = sorted(set(a) & set(b))
      return [a[v] for v in both], [b[v] for v in both]
    return pair

  near = run(tmp_path / "near", "1e-6")
  far = run(tmp_path / "far", "1")
  gap = lambda f, m: np.max(np.abs(np.subtract(*f(m, "random"))))
  for method in ("ours", "ablation", "asim"):
    assert len(near(method, "random")[0]) >= 5
    # Not exact: Adam's first step is lr * sign(g), and a 1e-6 shift can
    # flip the sign of a near-zero gradient entry.
    assert gap(near, method) < 0.05, (method, gap(near, method))
    assert gap(far, method) > 10 * gap(near, method) + 0.05, (
        method, gap(far, method), gap(near, method))


def test_a_bad_model_or_data_folder_ends_the_command_naming_its_flag(
    tiny_prior, tmp_path):
  """No traceback: the error names the flag, what it got and what it
  expected, before anything is written."""
  from recover.denoising import main
  base = ["--out", str(tmp_path / "out"), "--scales", "0.5"] + QUICK
  # A flow trained on other images, and Fashion-MNIST files a copy tore.
  cfg = mf.flows.RealNVPConfig(image_shape=(8, 8, 1), num_scales=2,
                               num_blocks=1, hidden_channels=4,
                               couplings_per_scale=1, final_couplings=1)
  small = tmp_path / "small"
  mf.checkpoint.save(small, mf.flows.from_config(cfg).init(
      jax.random.PRNGKey(0), jnp.full((2, 8, 8, 1), 0.5)), cfg)
  torn = tmp_path / "torn"
  torn.mkdir()
  for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    (torn / name).write_bytes(b"not gzip")
  cases = [
      (["--prior", "no_such_model"], r"--prior: got 'no_such_model', "
       r"expected a shipped model \(one of .*fashion_mnist_realnvp_10k.*\) "
       r"or a checkpoint directory"),
      (["--prior", "fashion_mnist_vae"],
       r"--prior: got 'fashion_mnist_vae', a VAE; expected a flow"),
      (["--prior", tiny_prior, "--vae", "fashion_mnist_realnvp"],
       r"--vae: got 'fashion_mnist_realnvp', a flow; expected a VAE"),
      (["--prior", str(tmp_path)], r"--prior: .* is not a mapflow "
       r"checkpoint"),
      (["--prior", tiny_prior, "--data-dir", str(tmp_path / "nowhere")],
       r"--data-dir: got .*nowhere'?, which is not a directory"),
      (["--prior", str(small)], r"--prior: got a model for images of shape "
       r"\(8, 8, 1\), expected \(28, 28, 1\)"),
      (["--prior", tiny_prior, "--data-dir", str(torn)],
       r"--data-dir: a file could not be read \(BadGzipFile"),
  ]
  for extra, match in cases:
    with pytest.raises(SystemExit, match=match):
      main("sinusoidal", base + extra)
  assert not (tmp_path / "out" / "results.csv").exists()
  assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.parametrize("module,args,match", [
    ("demo", ["--images", "0"], "--images: got '0', expected a positive int"),
    ("demo", ["--images", "9"], "--images: got 9, expected at most 8"),
    ("demo", ["--steps", "0"], "--steps: got '0'"),
    ("demo", ["--m", "-4"], "--m: got '-4', expected a positive int"),
    ("demo", ["--sin-scale", "0"], "--sin-scale: got '0'"),
    ("uncertainty", ["--samples", "0"], "--samples: got '0'"),
    ("uncertainty", ["--warmup", "-3"], "--warmup: got '-3', expected an "
     "int >= 0"),
    ("uncertainty", ["--calibration-images", "17"], "--calibration-images: "
     "got 17, expected at most 16"),
    ("uncertainty", ["--target-accept", "1"], "--target-accept: got '1', "
     "expected a number in \\(0, 1\\)"),
    ("learned_noise", ["--noise-batch", "0"], "--noise-batch: got '0'"),
    ("learned_noise", ["--beta", "-1"], "--beta: got '-1', expected a "
     "float >= 0"),
    ("demo", ["--scale", "inf"], "--scale: got 'inf', expected a positive"),
    ("uncertainty", ["--num-test", "100"], "--num-test: got 100, expected "
     "at most 64"),
    ("uncertainty", ["--level", "1.5"], "--level: got 1.5"),
    ("one_bit", ["--scale", "nan"], "--scale: got 'nan', expected a "
     "positive float"),
    ("one_bit", ["--m", "0"], "--m: got '0', expected a positive int"),
    ("sinusoidal", ["--init-std", "inf"], "--init-std: got 'inf'"),
    ("uncertainty", ["--seed", "-1"], r"--seed: got '-1', expected an int "
     r"in \[0, 2\*\*32\)"),
    ("sinusoidal", ["--seed", str(2 ** 40)], "--seed: got"),
    ("uncertainty", ["--samples", "1"], "--samples: got 1, expected at "
     "least 2"),
    ("uncertainty", ["--tasks", "cs,foo"], "--tasks: got 'cs,foo'"),
    ("uncertainty", ["--tasks", ","], "--tasks: got ','"),
    ("learned_noise", ["--operator", "scale:1e300"], "got 'scale:1e300', "
     "expected identity or scale:C"),
    ("learned_noise", ["--operator", "scale:1e-50"], "got 'scale:1e-50'"),
])
def test_a_bad_number_is_refused_before_any_work(tmp_path, capsys, module,
                                                 args, match):
  import importlib
  mod = importlib.import_module(f"recover.{module}")
  need = {"demo": [], "uncertainty": [], "one_bit": [],
          "learned_noise": ["--noise", "n.npz", "--measurements", "y.npz"]}
  main = (mod.main if module != "sinusoidal" else
          lambda argv: importlib.import_module("recover.denoising").main(
              "sinusoidal", argv))
  with pytest.raises(SystemExit) as e:
    main(["--out", str(tmp_path / "out")] + need.get(module, []) + args)
  assert e.value.code == 2
  import re
  assert re.search(match, capsys.readouterr().err)
  assert not (tmp_path / "out").exists()



def test_a_bad_out_folder_or_list_ends_the_command(tiny_prior, tmp_path):
  """An empty list, an --out that is a file (or empty), a folder made with
  other settings, or one in use: each ends the command with its message,
  not a traceback."""
  from mapflow import io as io_lib
  from recover.denoising import main
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  base = ["--scales", "0.5", "--prior", tiny_prior] + QUICK
  for out, extra, match in [
      (tmp_path / "o1", ["--scales", ","], r"--scales: got ',', expected "
       "at least one"),
      (a_file, [], r"--out: got .*a_file', which is a file"),
      (a_file / "sub", [], r"--out: got .*a_file/sub', under .*a_file', "
       "which is a file"),
      ("", [], r"--out: got '', expected a folder")]:
    with pytest.raises(SystemExit, match=match):
      main("sinusoidal", ["--out", str(out)] + base + extra)
  out = tmp_path / "o2"
  (out).mkdir()
  (out / "run.json").write_text(json.dumps({"seed": 7}))
  from recover.paper import tables
  tables.ResultTable(out / "selection.csv", tables.SELECTION_COLUMNS,
                     tables.SELECTION_KEY).add([{
                         "experiment": "sinusoidal", "setting": "0.5",
                         "method": "ours", "hyper": 0.5, "start": "zeros",
                         "val_images": "1 2", "val_score": 11.0}])
  with pytest.raises(SystemExit, match=r"--seed: got 0, but the results in "
                     ".* were made with 7; use another --out"):
    main("sinusoidal", ["--out", str(out)] + base)
  # Without rows (a run that stopped before its first result) run.json
  # binds nothing: it is replaced.
  from recover.paper import cells
  bare = cells.Context.__new__(cells.Context)
  bare.out, bare.run_info = out, {"seed": 0, "hosts": ["here"]}
  bare._check_run_info(False)
  assert json.loads((out / "run.json").read_text()) == bare.run_info
  with io_lib.FolderLock(tmp_path / "o3", what="--out"):
    with pytest.raises(SystemExit, match=r"--out: .* is in use"):
      main("sinusoidal", ["--out", str(tmp_path / "o3")] + base)

def test_digit_noise_blind_selection_keeps_its_noise_examples_apart(tmp_path):
  """ours_heldout's noise-only digits are a fixed slice; more validation
  and test images than fit before it are refused before any work."""
  from recover.digit_noise import NOISE_EXAMPLES_FROM, main
  with pytest.raises(SystemExit, match="--num-test: got 65 with --num-val "
                     f"16, expected them to add up to at most "
                     f"{NOISE_EXAMPLES_FROM}"):
    main(["--out", str(tmp_path / "out"), "--num-test", "65"])
  assert not (tmp_path / "out").exists()


def test_run_info_records_the_blind_score_each_experiment_uses(tmp_path):
  """The 2026-12-07 change to held-out errors (measured entries only)
  left denoising's recorrupted scores alone: their folders keep the
  string they were made with, so rerunning them is not refused."""
  import argparse
  from recover import common
  import mapflow as mf
  args = argparse.Namespace(prior=str(tmp_path), seed=0, num_val=16,
                            restarts=4, init_std=0.7,
                            methods="ours,ours_heldout")
  prior = mf.flows.from_config(mf.flows.RealNVPConfig(
      image_shape=(4, 4, 1), num_scales=1, num_blocks=1, hidden_channels=4,
      couplings_per_scale=1, final_couplings=1))
  blind = lambda e: common.run_info(args, prior, e)["blind_selection"]
  assert blind("sinusoidal") == blind("radial") == (
      "recorrupted alpha 0.5, else held-out 20% (dB)")
  assert blind("one_bit") == blind("subpixel") == (
      "recorrupted alpha 0.5, else held-out 20% of the measured entries (dB)")
  # The committed folders (a rerun of any of them must not be refused).
  from pathlib import Path
  results = Path(__file__).resolve().parents[1] / "results"
  for e in ("sinusoidal", "radial", "one_bit", "subpixel"):
    have = json.loads((results / e / "run.json").read_text())
    assert have["blind_selection"] == blind(e), e


def test_report_refuses_an_out_it_cannot_write_before_building(tmp_path,
                                                               capsys):
  from recover import report
  (tmp_path / "f").write_text("x")
  for out in (str(tmp_path), str(tmp_path / "f" / "REPORT.md")):
    with pytest.raises(SystemExit) as e:
      report.main(["--results", str(tmp_path), "--out", out])
    assert e.value.code == 2 and "--out: got" in capsys.readouterr().err
