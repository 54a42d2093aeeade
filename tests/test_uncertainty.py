"""recover.uncertainty: calibration measures, and the command end to end."""

import json

import jax
import numpy as np
import pytest


def test_calibration_of_exactly_calibrated_samples():
  """Truth and samples drawn from the same Gaussian per pixel: 90%
  intervals cover 90%; an error that scales with the std correlates."""
  from recover.uncertainty import calibration
  rng = np.random.default_rng(0)
  std = rng.uniform(0.01, 0.2, (4, 6, 6, 1))
  mean = rng.uniform(0.2, 0.8, std.shape)
  x = mean + std * rng.normal(size=std.shape)
  samples = mean + std * rng.normal(size=(4000,) + std.shape)
  cal = calibration(x, samples, 0.9)
  assert cal["coverage"] == pytest.approx(0.9, abs=0.04)
  assert cal["std_error_corr"] > 0.3
  over = calibration(x, mean + 0.2 * std * rng.normal(
      size=(4000,) + std.shape), 0.9)
  assert over["coverage"] < 0.5  # overconfident intervals miss


@pytest.mark.slow  # about 70 s on an AVX2-only 2-core CPU
def test_uncertainty_cli_runs(tiny_prior, tmp_path, monkeypatch):
  """End to end; a rerun with the same settings keeps the finished tasks
  (sampling nothing), one with other settings adds its rows to theirs."""
  import mapflow as mf
  from recover.uncertainty import main
  args = ["--out", str(tmp_path), "--prior", tiny_prior, "--num-test",
          "2", "--samples", "8", "--chains", "2", "--warmup", "6",
          "--m", "50", "--unknown-scale", "--betas", "0.1,1",
          "--holdout-steps", "2", "--calibration-images", "2"]
  rows = main(args)
  assert [r["task"] for r in rows] == ["sinusoidal", "cs"]
  for r in rows:
    assert 0.0 <= r["coverage"] <= 1.0 and np.isfinite(r["psnr_map"])
    assert r["scale_estimated"] and r["scale_used"] > 0
    # Two calibration images are too few for a finite 90% width.
    assert r["conformal_scale"] is None and r["coverage_conformal"] == 1.0
  assert json.loads((tmp_path / "summary.json").read_text()) == rows
  assert (tmp_path / "sinusoidal.png").is_file()
  assert (tmp_path / "cs.png").is_file()
  assert all(r["seconds"] > 0 and r["gradients_per_chain"] == 6 + 4
             for r in rows)
  sampled = []
  real = mf.sample_posterior
  monkeypatch.setattr(mf, "sample_posterior", lambda *a, **k: (
      sampled.append(1), real(*a, **k))[1])
  assert main(args) == rows and sampled == []
  more = main(args[:-9] + ["--tasks", "sinusoidal", "--samples", "4", "--m",
                           "50", "--unknown-scale", "--betas", "0.1,1",
                           "--holdout-steps", "2", "--calibration-images",
                           "2"])
  # One sampler call per chunk: the calibration images, then the test ones.
  assert sampled == [1, 1] and more[0]["samples"] == 4
  assert json.loads((tmp_path / "summary.json").read_text()) == more + rows


def _fake_sampler(calls, fail_at=None):
  """A stand-in for ``mf.sample_posterior``: draws around y with std 0.01
  (overconfident for SINUSOIDAL s = 0.2), deterministic in y."""
  import mapflow as mf

  def sample(y, *, num_samples, config, key, **_):
    calls.append(len(y))
    if fail_at is not None and len(calls) == fail_at:
      raise KeyboardInterrupt("killed")
    y = np.asarray(y)
    seed = [int(1e6 * float(np.abs(y).sum())) % 2**32] + [
        int(k) for k in np.asarray(jax.random.key_data(key)).ravel()]
    rng = np.random.default_rng(seed)
    s = y[None] + 0.01 * rng.normal(size=(num_samples,) + y.shape)
    ones = np.ones((config.chains, len(y)))
    return mf.PosteriorSamples(s, s.mean(0), s.std(0, ddof=1), ones, ones,
                               ones)
  return sample


def test_uncertainty_resumes_from_its_last_chunk_and_calibrates(
    tiny_prior, tmp_path, monkeypatch):
  """Chunks of images are kept as they finish: a run killed in its third
  chunk resumes there and ends as an uninterrupted one; the conformal
  width fitted on the calibration images covers ~90% of the test pixels
  where the sampler's own intervals cover few."""
  import mapflow as mf
  from recover.uncertainty import main
  monkeypatch.setattr(mf, "recover", lambda y, **k: type(
      "R", (), {"x": np.clip(np.asarray(y), 0, 1)})())
  args = ["--prior", tiny_prior, "--tasks", "sinusoidal", "--num-test", "3",
          "--calibration-images", "9", "--chunk", "5", "--samples", "40",
          "--chains", "2", "--warmup", "1"]
  calls = []
  monkeypatch.setattr(mf, "sample_posterior", _fake_sampler(calls))
  (whole,) = main(["--out", str(tmp_path / "whole")] + args)
  assert calls == [5, 4, 3]  # calibration chunks, then the test chunk
  calls = []
  monkeypatch.setattr(mf, "sample_posterior", _fake_sampler(calls, 3))
  with pytest.raises(KeyboardInterrupt):
    main(["--out", str(tmp_path / "killed")] + args)
  parts = sorted((tmp_path / "killed" / "parts").rglob("chunk*.npz"))
  assert [p.name for p in parts] == ["chunk000.npz", "chunk001.npz"]
  calls = []
  monkeypatch.setattr(mf, "sample_posterior", _fake_sampler(calls))
  (resumed,) = main(["--out", str(tmp_path / "killed")] + args)
  assert calls == [3]
  drop = lambda r: {k: v for k, v in r.items()
                    if k not in ("seconds", "sampling_seconds")}
  assert drop(resumed) == drop(whole)
  assert whole["calibration_images"] == 9 and whole["images"] == 3
  assert whole["sampling_seconds"] >= 0.0
  assert whole["coverage"] < 0.5
  assert 0.85 < whole["coverage_conformal"] <= 1.0
  assert 2.0 < whole["conformal_scale"] < 100.0
  # A chunk file holding other images is not read as this one: sampled
  # again, and the result is unchanged.
  (tmp_path / "killed" / "summary.json").unlink()
  (part,) = {p.parent for p in parts}
  (part / "chunk002.npz").write_bytes((part / "chunk001.npz").read_bytes())
  calls = []
  monkeypatch.setattr(mf, "sample_posterior", _fake_sampler(calls))
  (again,) = main(["--out", str(tmp_path / "killed")] + args)
  assert calls == [3] and drop(again) == drop(whole)
  # A truncated chunk, and a killed writer's temporary, likewise.
  (tmp_path / "killed" / "summary.json").unlink()
  (part / "chunk001.npz").write_bytes(b"PK\x03\x04 cut short")
  (part / ".chunk001.npz.123.tmp").write_bytes(b"half")
  calls = []
  monkeypatch.setattr(mf, "sample_posterior", _fake_sampler(calls))
  (again,) = main(["--out", str(tmp_path / "killed")] + args)
  assert calls == [4] and drop(again) == drop(whole)
  assert not list(part.glob(".chunk*"))


def test_laplace_rows_and_rows_older_than_the_preconditioner(
    tiny_prior, tmp_path, monkeypatch):
  """A Laplace-preconditioned run reports the approximation's own
  intervals beside the sampler's; a row written before the preconditioner
  was recorded reads as "adaptive", so a default rerun keeps it (and its
  chunks' names) instead of sampling again or duplicating it."""
  import mapflow as mf
  from recover.uncertainty import main
  monkeypatch.setattr(mf, "recover", lambda y, **k: type(
      "R", (), {"x": np.clip(np.asarray(y), 0, 1)})())
  calls = []
  fake = _fake_sampler(calls)

  def sample(y, preconditioner="adaptive", **k):
    post = fake(y, **k)
    if preconditioner != "laplace":
      return post
    y = np.asarray(y)
    lap = mf.LaplaceApproximation(None, None, np.clip(y, 0, 1),
                                  0.25 + 0.1 * np.clip(y, 0, 1))
    return post._replace(laplace=lap)
  monkeypatch.setattr(mf, "sample_posterior", sample)
  args = ["--out", str(tmp_path), "--prior", tiny_prior, "--tasks",
          "sinusoidal", "--num-test", "3", "--calibration-images", "0",
          "--samples", "10", "--chains", "2", "--warmup", "1"]
  (lap,) = main(args + ["--preconditioner", "laplace"])
  assert lap["preconditioner"] == "laplace"
  # ±1.645 x 0.25-0.35 around the clipped y holds most of the truth at
  # s = 0.2.
  assert lap["coverage"] < 0.5 < lap["coverage_laplace"] <= 1.0
  assert 0.25 <= lap["mean_laplace_std"] <= 0.35
  assert -1.0 <= lap["laplace_std_error_corr"] <= 1.0
  (adaptive,) = main(args)
  assert "coverage_laplace" not in adaptive
  rows = json.loads((tmp_path / "summary.json").read_text())
  assert [r["preconditioner"] for r in rows] == ["adaptive", "laplace"]
  # Make the adaptive row an old one, as written before the key existed.
  del rows[0]["preconditioner"]
  (tmp_path / "summary.json").write_text(json.dumps(rows))
  chunks = sorted(p.parent.name for p in (tmp_path / "parts").rglob("*.npz"))
  calls.clear()
  (again,) = main(args)
  assert calls == [] and again["preconditioner"] == "adaptive"
  rows = json.loads((tmp_path / "summary.json").read_text())
  assert [r["preconditioner"] for r in rows] == ["adaptive", "laplace"]
  (tmp_path / "summary.json").unlink()
  (again,) = main(args)  # sampled nothing: its chunks are found by name
  assert calls == [] and again["preconditioner"] == "adaptive"
  assert sorted(p.parent.name for p in (tmp_path / "parts").rglob(
      "*.npz")) == chunks
  # ... the names older code gave them: the hash of the keys it had.
  import hashlib
  from recover import uncertainty
  old_keys = [k for k in uncertainty.CHUNK_KEYS if k != "preconditioner"]
  ident = {k: again[k] for k in old_keys}
  tag = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()
                       ).hexdigest()[:12]
  assert f"sinusoidal-{tag}" in chunks
