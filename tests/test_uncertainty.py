"""recover.uncertainty: calibration measures, and the command end to end."""

import json

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
          "--holdout-steps", "2"]
  rows = main(args)
  assert [r["task"] for r in rows] == ["sinusoidal", "cs"]
  for r in rows:
    assert 0.0 <= r["coverage"] <= 1.0 and np.isfinite(r["psnr_map"])
    assert r["scale_estimated"] and r["scale_used"] > 0
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
  more = main(args[:-7] + ["--tasks", "sinusoidal", "--samples", "4", "--m",
                           "50", "--unknown-scale", "--betas", "0.1,1",
                           "--holdout-steps", "2"])
  assert sampled == [1] and more[0]["samples"] == 4
  assert json.loads((tmp_path / "summary.json").read_text()) == more + rows
