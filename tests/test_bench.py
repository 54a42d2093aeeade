"""The benchmark harness runs in quick mode and writes its figures."""

import json
import os
import subprocess
import sys

import pytest


ALL_QUICK = {"throughput", "sweep", "restarts", "flops", "time_to_quality",
             "training", "scaling", "chunking", "precision", "remat",
             "memory", "op_profile"}
# The default run leaves out the sections that compile the most (each flow
# size; remat's gradients; L-BFGS against Adam; restarts; a training step);
# -m slow runs every one.
SLOW_ONLY = {"scaling", "remat", "time_to_quality", "restarts", "training"}


# About 90 s on an AVX2-only 2-core CPU: with -m slow.
@pytest.mark.slow
@pytest.mark.parametrize("every_section", [
    False, pytest.param(True, marks=pytest.mark.slow)])
def test_bench_quick_writes_json_and_report(tmp_path, every_section):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ)
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  want = ALL_QUICK if every_section else ALL_QUICK - SLOW_ONLY
  only = [] if every_section else ["--only", ",".join(sorted(want))]
  out = subprocess.run(
      [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)]
      + only, cwd=root, env=env, capture_output=True, text=True,
      timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads((tmp_path / "bench.json").read_text())
  s = report["sections"]
  assert set(s) == want
  assert all(r["s_per_step"] > 0 for r in s["throughput"]["rows"])
  # Compile seconds come from JAX's own events: each first call compiled
  # something (a fresh process), and none can come out negative.
  assert all(r["compile_s"] > 0 for r in s["throughput"]["rows"]
             + s["chunking"]["rows"])
  assert s["sweep"]["compile_sweep_s"] > 0
  assert s["sweep"]["speedup"] > 0
  assert 0 < s["flops"]["fraction_of_matmul"]
  assert s["flops"]["step_flops"] > 0
  assert not any(v.get("partial") for v in s.values())
  assert s["memory"]["peak_rss_mb"] > 0
  for r in s["op_profile"]["rows"]:
    assert r["op_ms_per_call"] > 0
    assert abs(sum(k["share"] for k in r["kinds"].values()) - 1) < 1e-6
    assert r["kinds"]["convolution / matmul"]["ops"] > 0
  assert {r["chunk"] for r in s["chunking"]["rows"]} == {1, 10}
  prec = {r["dtype"]: r for r in s["precision"]["rows"]}
  assert set(prec) == {"float32", "bfloat16"}
  assert all(r["psnr"] > 5 and r["s_per_step"] > 0 for r in prec.values())
  if every_section:
    for task in s["time_to_quality"]["tasks"].values():
      assert len(task["lbfgs"]) == 2 and len(task["adam"]) == 2
    # Remat recomputes the same activations: the gradient is unchanged.
    assert s["remat"]["remat_grad_max_abs_diff"]["recovery"] < 1e-4
    assert all(r["temp_mb"] is None or r["temp_mb"] >= 0
               for r in s["remat"]["rows"])
    assert len(s["scaling"]["rows"]) >= 2
  md = (tmp_path / "BENCHMARKS.md").read_text()
  assert "Achieved FLOP/s" in md
  assert ("Time to quality" in md) == every_section
  # The renderer reads the same JSON back, side by side with itself.
  from bench import render
  both = render.render([report, report], [None, None])
  assert "## Targets" in both and both.count("# Detail:") == 2


def test_coupling_sides_follow_each_flow_family():
  """RealNVP's scale s runs at H / 2^s; each Glow level squeezes first."""
  import mapflow as mf
  from bench.sections import coupling_sides
  rn = mf.flows.RealNVPConfig(image_shape=(28, 28, 1), num_scales=3)
  gl = mf.flows.GlowConfig(image_shape=(256, 256, 3), num_levels=6)
  assert coupling_sides(rn) == [28, 14, 7]
  assert coupling_sides(gl) == [128, 64, 32, 16, 8, 4]


def test_first_minute_targets_read_the_measured_figures():
  """The demo and compile targets are judged on the figures the sections
  wrote (≤ 40 s from an empty cache; ≤ 5 s for one recover compile), and
  the first minute's runs are tabulated."""
  from bench import render, sections

  def report(demo_s, compile_s):
    rows = [{"round": 0, "cache": c, "wall_s": w, "demo_clock_s": w - 2}
            for c, w in (("empty", demo_s), ("warm", demo_s - 10))]
    return {"mode": "full", "backend": "cpu", "device": "cpu", "devices": 1,
            "jax": "x", "started": "now", "sections": {
                "first_minute": {"rows": rows, "empty_cache_s": demo_s,
                                 "warm_cache_s": demo_s - 10, "rounds": 1,
                                 "command": "python -m recover.demo"},
                "throughput": {"prior": "p", "compile_measure": "events",
                               "rows": [{"task": "one_bit", "batch": 64,
                                         "compile_s": compile_s}]}}}

  def verdicts(r):
    return {name.split(" (")[0]: verdict
            for name, _, _, verdict in render.targets(r, None)}

  fast = verdicts(report(39.0, 4.9))
  slow = verdicts(report(41.0, 5.1))
  demo = "the README's demo from an empty compile cache"
  comp = "compile of recover, 1-bit CS batch 64, prior: p"
  assert (fast[demo], slow[demo]) == ("met", "not met")
  assert (fast[comp], slow[comp]) == ("met", "not met")
  md = sections.markdown(report(41.0, 5.1))
  assert "## The first minute" in md and "| 0 | warm | 31.00 | 29.00 |" in md


def test_first_minute_times_fresh_demo_runs_and_checks_their_tables(
    monkeypatch):
  """The section runs the demo in fresh processes (an empty cache, then
  the cache it left), reads each one's clock, and refuses runs whose
  tables differ, keeping the timings measured so far."""
  import subprocess
  from pathlib import Path
  from bench import sections
  calls, saved = [], []

  def fake_run(cmd, cwd, capture_output, text, table="t\n"):
    calls.append(cmd)
    out = Path(cmd[cmd.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "psnr.csv").write_text(table(len(calls)) if callable(table)
                                  else table)
    return subprocess.CompletedProcess(cmd, 0, f"table\nfigure: x; "
                                       f"{30 + len(calls)} s\n", "")

  class Ctx:
    cfg = {"first_minute_rounds": 2}
    save_partial = staticmethod(saved.append)

  monkeypatch.setattr(subprocess, "run", fake_run)
  res = sections.first_minute(Ctx())
  assert [r["cache"] for r in res["rows"]] == ["empty", "warm"] * 2
  assert [r["demo_clock_s"] for r in res["rows"]] == [31.0, 32.0, 33.0,
                                                      34.0]
  # Each round in its own empty folder; the warm run reuses its cache.
  caches = [c[c.index("--cache") + 1] for c in calls]
  assert caches[0] == caches[1] != caches[2] == caches[3]
  assert len(saved) == 4
  calls.clear()
  saved.clear()
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: fake_run(
      cmd, **kw, table=lambda n: f"t{n}\n"))
  with pytest.raises(RuntimeError, match="table differed"):
    sections.first_minute(Ctx())
  assert len(saved) == 2 and len(saved[-1]["rows"]) == 2


def test_gpu_step_probe_appends_a_line_per_run(tmp_path):
  """bench.gpu_step (the GPU launch-cutting probe) runs anywhere; its
  quick mode checks it writes one line per variant, with the quality."""
  from bench import gpu_step
  for chunk in (None, 3):
    gpu_step.main(["--out", str(tmp_path), "--quick", "--batch", "2",
                   "--steps", "3", "--label", f"c{chunk}"]
                  + ([] if chunk is None else ["--chunk", str(chunk)]))
  rows = [json.loads(l) for l in
          (tmp_path / "gpu_step.jsonl").read_text().splitlines()]
  assert [r["label"] for r in rows] == ["cNone", "c3"]
  assert [r["chunk"] for r in rows] == [None, 3]
  assert all(r["s_per_step"] > 0 and r["psnr_after_steps"] > 5
             for r in rows)


def test_paths_it_could_not_write_are_refused_before_any_section(tmp_path,
                                                                 capsys):
  """The report is written after every section has run; an --out or --md
  that could not take it ends the command at once, naming the flag."""
  from bench.__main__ import main
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  for argv, match in (
      (["--out", ""], r"--out: got '', expected a folder"),
      (["--out", str(a_file / "sub")], r"--out: got .*sub', but .*a_file' "
       r"is a file"),
      (["--md", str(a_file / "r.md")], r"--md: got .*r\.md', but "
       r".*a_file' is a file"),
      (["--md", str(tmp_path)], r"--md: got .*, which is a folder"),
      (["--out", str(tmp_path / "o"), "--md", str(tmp_path / "o" /
                                                  "bench.json")],
       r"--md: got .*bench\.json', the raw figures' own file"),
      (["--only", ","], r"--only: got ',', expected at least one of")):
    with pytest.raises(SystemExit):
      main(["--only", "memory", "--quick"] + argv)
    assert __import__("re").search(match, capsys.readouterr().err), argv
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_op_kinds_sort_xla_op_names_and_leave_out_runtime_events():
  from bench.sections import op_kind
  assert op_kind("ynn_fusion.311") == "convolution / matmul"
  assert op_kind("convolution.4") == "convolution / matmul"
  assert op_kind("transpose_copy_fusion.211") == "transpose / copy"
  assert op_kind("triangular_solve.123") == "LAPACK / custom call"
  assert op_kind("add_maximum_fusion.3") == "elementwise and other"
  assert op_kind("wrapped_log") == "elementwise and other"
  for runtime in ("ThunkExecutor::Execute", "$api.py:2479 block_until_ready",
                  "SlinkyThreadPool::Await", "PjitFunction(loss)",
                  "end: ynn_fusion", "CopyToMemorySpace",
                  "backend_compile_and_load", "shard_args"):
    assert op_kind(runtime) is None, runtime
