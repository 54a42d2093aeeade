"""``python -m recover.merge``: a run split over folders by settings, then
merged, holds every row exactly once, and disagreeing folders are refused
with nothing written."""

import json

import pytest

from mapflow import io as io_lib
from recover import merge
from recover.paper import tables

INFO = {"prior": "p", "seed": 0, "num_val": 2, "matrix_rows": 100,
        "hosts": ["cpu A"]}


def _folder(path, settings, info=INFO, psnr=20.0):
  path.mkdir(parents=True, exist_ok=True)
  io_lib.write_json_atomic(path / "run.json", info)
  res = tables.ResultTable(path / "results.csv", tables.RESULT_COLUMNS,
                           tables.RESULT_KEY)
  sel = tables.ResultTable(path / "selection.csv", tables.SELECTION_COLUMNS,
                           tables.SELECTION_KEY)
  for st in settings:
    res.add([{"experiment": "one_bit", "setting": st, "method": "ours",
              "hyper": "0.5|zeros", "image": i, "psnr": psnr + i}
             for i in range(3)])
    sel.add([{"experiment": "one_bit", "setting": st, "method": "ours",
              "hyper": 0.5, "start": "zeros", "val_images": "1 2",
              "val_score": 11.0}])
    shown = path / "figures" / "shown"
    shown.mkdir(parents=True, exist_ok=True)
    (path / "figures" / f"{st}.png").write_bytes(st.encode())
    (shown / f"{st}_ours.npz").write_bytes(b"kept " + st.encode())
  return path


def _bytes(folder):
  return {p.relative_to(folder): p.read_bytes()
          for p in sorted(folder.rglob("*")) if p.is_file()}


def test_split_folders_merge_into_one_with_every_row_once(tmp_path):
  into = _folder(tmp_path / "a", ["m=50,s=1", "m=100,s=1"])
  # The source also holds one setting both made (identical rows): skipped.
  src = _folder(tmp_path / "b", ["m=100,s=1", "m=100,s=0.5"],
                {**INFO, "hosts": ["cpu B"]})
  added = merge.merge(into, [src])
  assert added == {"results.csv": 3, "selection.csv": 1,
                   tables.DRAWS_FILE: 0, "figures": 2}
  rows = tables.read_rows(into / "results.csv")
  keys = [tuple(r[k] for k in tables.RESULT_KEY) for r in rows]
  assert len(keys) == len(set(keys)) == 9
  assert {r["setting"] for r in rows} == {"m=50,s=1", "m=100,s=1",
                                          "m=100,s=0.5"}
  assert (into / "figures" / "shown" / "m=100,s=0.5_ours.npz").read_bytes() \
      == b"kept m=100,s=0.5"
  info = json.loads((into / "run.json").read_text())
  assert info["hosts"] == ["cpu A", "cpu B"]
  summary = json.loads((into / "summary.json").read_text())
  assert {(r["setting"], r["n"]) for r in summary} == {
      ("m=50,s=1", 3), ("m=100,s=1", 3), ("m=100,s=0.5", 3)}
  assert not (into / ".lock").exists() and not (src / ".lock").exists()
  # Merging again adds nothing.
  before = _bytes(into)
  assert sum(merge.merge(into, [src]).values()) == 0
  assert _bytes(into) == before


@pytest.mark.parametrize("fault", ["run_info", "row", "figure", "locked"])
def test_a_disagreeing_or_busy_folder_is_refused_and_nothing_written(
    tmp_path, fault):
  into = _folder(tmp_path / "a", ["m=50,s=1"])
  info = {**INFO, "matrix_rows": 3200} if fault == "run_info" else INFO
  src = _folder(tmp_path / "b", ["m=50,s=1", "m=200,s=1"], info,
                psnr=21.0 if fault == "row" else 20.0)
  if fault == "figure":
    (src / "figures" / "m=50,s=1.png").write_bytes(b"redrawn")
  before = _bytes(into)
  held = (io_lib.FolderLock(src, what="other").acquire()
          if fault == "locked" else None)
  want = {"run_info": "matrix_rows = 3200", "row": "differs",
          "figure": "differs", "locked": "in use"}[fault]
  err = io_lib.LockedError if fault == "locked" else merge.MergeError
  with pytest.raises(err, match=want):
    merge.merge(into, [src])
  if held:
    held.release()
  assert _bytes(into) == before
  with pytest.raises(merge.MergeError, match="is the folder merged into"):
    merge.merge(into, [into])


@pytest.mark.parametrize("clash", ["run_info", "row", "figure", "twice"])
def test_two_sources_that_disagree_with_each_other_are_refused(tmp_path,
                                                               clash):
  """INTO lacks what both sources hold, and they hold it differently: the
  merge is refused before anything is written (not the last one kept)."""
  into = _folder(tmp_path / "into", ["m=50,s=1"], {**INFO, "matrix_rows": 0})
  (into / "run.json").write_text(json.dumps({"prior": "p", "seed": 0}))
  a = _folder(tmp_path / "a", ["m=200,s=1"])
  b = _folder(tmp_path / "b", ["m=200,s=1"],
              {**INFO, "matrix_rows": 3200} if clash == "run_info" else INFO,
              psnr=21.0 if clash == "row" else 20.0)
  if clash == "figure":
    (b / "figures" / "m=200,s=1.png").write_bytes(b"redrawn")
  before = _bytes(into)
  sources = [a, tmp_path / "a" / ".." / "a"] if clash == "twice" else [a, b]
  want = {"run_info": "matrix_rows = 3200", "row": "differs",
          "figure": "differs", "twice": "listed twice"}[clash]
  with pytest.raises(merge.MergeError, match=want):
    merge.merge(into, sources)
  assert _bytes(into) == before


@pytest.mark.slow  # three small runs of the 1-bit command: about a minute
def test_a_one_bit_run_split_by_settings_merges_into_the_whole_run(
    tiny_prior, tmp_path):
  """The m-sweep in one folder and the s-sweep in another (the whole
  run's --matrix-rows), merged, equal one run of both, row for row; the
  whole command on the merged folder then fits nothing."""
  from recover.one_bit import main
  common = ["--prior", tiny_prior, "--inits", "zeros:2", "--no-ood",
            "--methods", "ours,asim", "--num-val", "2", "--num-test", "2",
            "--m", "100"]
  main(["--out", str(tmp_path / "whole"), "--ms", "50,200", "--scales",
        "0.5"] + common)
  main(["--out", str(tmp_path / "part_m"), "--ms", "50,200", "--scales",
        ""] + common)
  # Alone, the s-sweep at m = 100 would draw a 100-row matrix: another
  # design, which the merge refuses.
  main(["--out", str(tmp_path / "alone"), "--ms", "", "--scales", "0.5"]
       + common)
  with pytest.raises(merge.MergeError, match="matrix_rows = 100"):
    merge.merge(tmp_path / "part_m", [tmp_path / "alone"])
  main(["--out", str(tmp_path / "part_s"), "--ms", "", "--scales", "0.5",
        "--matrix-rows", "200"] + common)
  merge.merge(tmp_path / "part_m", [tmp_path / "part_s"])
  for name, key in (("results.csv", tables.RESULT_KEY),
                    ("selection.csv", tables.SELECTION_KEY)):
    want = {tuple(r[k] for k in key): r
            for r in tables.read_rows(tmp_path / "whole" / name)}
    got = {tuple(r[k] for k in key): r
           for r in tables.read_rows(tmp_path / "part_m" / name)}
    assert got == want, name
  folder = tmp_path / "part_m"
  before = {f: (folder / f).read_bytes()
            for f in ("results.csv", "selection.csv")}
  main(["--out", str(folder), "--ms", "50,200", "--scales", "0.5"] + common)
  assert {f: (folder / f).read_bytes() for f in before} == before


def test_folders_of_two_experiments_are_refused(tmp_path):
  """run.json does not name the experiment; the rows do: one_bit rows
  merged into a folder of another experiment are refused."""
  into = _folder(tmp_path / "into", ["m=50,s=1"])
  res = tables.ResultTable(into / "results.csv", tables.RESULT_COLUMNS,
                           tables.RESULT_KEY)
  other = _folder(tmp_path / "other", [])
  tables.ResultTable(other / "results.csv", tables.RESULT_COLUMNS,
                     tables.RESULT_KEY).add(
      [{"experiment": "sinusoidal_ood", "setting": "0.1", "method": "ours",
        "hyper": "0.5|zeros", "image": 0, "psnr": 20.0}])
  before = _bytes(into)
  with pytest.raises(merge.MergeError, match=r"holds results of "
                     r"\['sinusoidal'\], but .*into holds \['one_bit'\]"):
    merge.merge(into, [other])
  # Named rightly after a source whose figures are new, too.
  a = _folder(tmp_path / "a", ["m=60,s=1"])
  with pytest.raises(merge.MergeError, match=r"but \S*into holds"):
    merge.merge(into, [a, other])
  assert _bytes(into) == before and len(res.rows) == 3
  # Its own out-of-distribution rows are the same experiment.
  ood = _folder(tmp_path / "ood", [])
  tables.ResultTable(ood / "results.csv", tables.RESULT_COLUMNS,
                     tables.RESULT_KEY).add(
      [{"experiment": "one_bit_ood", "setting": "m=50,s=1", "method": "ours",
        "hyper": "0.5|zeros", "image": 0, "psnr": 20.0}])
  merge.merge(into, [ood])


def test_unreadable_folders_end_the_command_with_one_line(tmp_path):
  """A run.json that is not JSON and a table with other columns are
  MergeErrors, which the command prints as one line; nothing is written."""
  into = _folder(tmp_path / "into", ["m=50,s=1"])
  before = _bytes(into)
  bad_json = _folder(tmp_path / "bad_json", ["m=60,s=1"])
  (bad_json / "run.json").write_text("{not json")
  with pytest.raises(merge.MergeError, match=r"bad_json.*run\.json: not "
                     r"readable as JSON"):
    merge.merge(into, [bad_json])
  (bad_json / "run.json").write_bytes(b"\xff\xfe")
  with pytest.raises(merge.MergeError, match="not readable as JSON"):
    merge.merge(into, [bad_json])
  (bad_json / "run.json").write_text("null")
  with pytest.raises(merge.MergeError, match="holds NoneType, expected a "
                     "JSON object"):
    merge.merge(into, [bad_json])
  bad_csv = _folder(tmp_path / "bad_csv", ["m=70,s=1"])
  (bad_csv / "selection.csv").write_text("a,b\n1,2\n")
  with pytest.raises(SystemExit, match=r"error: .*bad_csv.*selection\.csv: "
                     r"has columns \['a', 'b'\]"):
    merge.main(["--into", str(into), str(bad_csv)])
  assert _bytes(into) == before


@pytest.mark.parametrize("damage,match", [
    ("not_a_number", r"results\.csv: row \(.*image=1\): psnr 'abc' is not "
     "a number"),
    ("short_row", r"results\.csv: line 3 has 5 fields, expected 6"),
    ("long_row", r"selection\.csv: line 2 has 8 fields, expected 7"),
    ("not_utf8", r"results\.csv: .*codec can't decode")])
def test_a_damaged_table_is_refused_before_anything_is_written(
    tmp_path, damage, match):
  """Each of these had written the source's rows into --into and then
  crashed while summarising them (a traceback, summary.json stale)."""
  into = _folder(tmp_path / "into", ["m=50,s=1"])
  before = _bytes(into)
  src = _folder(tmp_path / "src", ["m=60,s=1"])
  res, sel = src / "results.csv", src / "selection.csv"
  lines = res.read_text().splitlines()
  if damage == "not_a_number":
    lines[2] = lines[2].rsplit(",", 1)[0] + ",abc"
    res.write_text("\n".join(lines) + "\n")
  elif damage == "short_row":
    lines[2] = lines[2].rsplit(",", 1)[0]
    res.write_text("\n".join(lines) + "\n")
  elif damage == "long_row":
    sel.write_text(sel.read_text().rstrip("\n") + ",extra\n")
  else:
    res.write_bytes(res.read_bytes() + b"\xff\xfe,\n")
  with pytest.raises(SystemExit, match=r"error: .*src.*" + match):
    merge.main(["--into", str(into), str(src)])
  assert _bytes(into) == before


def test_an_empty_into_is_refused(tmp_path, capsys):
  src = _folder(tmp_path / "src", ["m=60,s=1"])
  with pytest.raises(SystemExit) as e:
    merge.main(["--into", "", str(src)])
  assert e.value.code == 2
  assert "--into: got '', expected a folder" in capsys.readouterr().err
