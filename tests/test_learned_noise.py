"""recover.learned_noise end to end on a small synthetic noise set.

Signals: smooth 8x8 fields, with a Gaussian prior fitted to them (a linear
flow).  Noise: one bright horizontal stripe per image at a random row.  The
command trains a noise flow on 600 noise-only examples, then recovers
y = x + stripe: the learned noise model must remove the stripes (PSNR far
above the measurement's), and a rerun must resume, not retrain.
"""

import json

import numpy as np
import pytest

import mapflow as mf

H = 8


def _signals(rng, n):
  i, j = np.meshgrid(np.arange(H), np.arange(H), indexing="ij")
  a, b, c = (rng.uniform(-1, 1, (3, n, 1, 1)))
  f = 0.5 + 0.15 * (a * np.cos(np.pi * i / H) + b * np.cos(np.pi * j / H)
                    + c * np.cos(np.pi * (i + j) / H))
  return np.clip(f, 0.05, 0.95)[..., None]


def _stripes(rng, n):
  out = np.zeros((n, H, H, 1))
  rows = rng.integers(0, H, n)
  out[np.arange(n), rows] = rng.uniform(0.3, 0.6, (n, 1, 1))
  return out


@pytest.mark.slow  # 15-50 s on an AVX2-only 2-core CPU
def test_learned_noise_removes_structured_noise(tmp_path, capsys):
  from recover import learned_noise
  rng = np.random.default_rng(0)
  xs = _signals(rng, 2000)
  cov = np.cov(xs.reshape(len(xs), -1).T) + 1e-4 * np.eye(H * H)
  cfg = mf.flows.LinearGaussianConfig((H, H, 1))
  mf.checkpoint.save(tmp_path / "prior", mf.flows.linear_gaussian_params(
      xs.mean(0), np.linalg.cholesky(cov)), cfg)
  np.savez(tmp_path / "noise.npz", x=_stripes(rng, 600))
  truth = _signals(rng, 8)
  np.savez(tmp_path / "y.npz", y=(truth + _stripes(rng, 8)).astype(
      np.float32))
  np.savez(tmp_path / "truth.npz", x=truth)
  args = ["--noise", str(tmp_path / "noise.npz"), "--measurements",
          str(tmp_path / "y.npz"), "--out", str(tmp_path / "out"),
          "--prior", str(tmp_path / "prior"), "--truth",
          str(tmp_path / "truth.npz"), "--noise-steps", "120", "--steps",
          "60", "--noise-preset", "realnvp_small", "--no-progress"]
  res = learned_noise.main(args)
  assert res.x.shape == (8, H, H, 1)
  psnr = json.loads((tmp_path / "out" / "psnr.json").read_text())
  assert psnr["psnr_mean"] > psnr["measurement_psnr_mean"] + 10.0, psnr
  for f in ("recovered.npz", "recovered.png"):
    assert (tmp_path / "out" / f).is_file()
  # A rerun resumes the trained flow (no new training rows) and agrees.
  metrics = (tmp_path / "out" / "noise_flow" / "metrics.jsonl").read_text()
  again = learned_noise.main(args)
  assert (tmp_path / "out" / "noise_flow" / "metrics.jsonl").read_text() == \
      metrics
  np.testing.assert_allclose(again.x, res.x, atol=1e-5)
  # Other noise examples would carry on the flow trained on the first.
  np.savez(tmp_path / "noise_b.npz", x=_stripes(rng, 600))
  with pytest.raises(SystemExit, match=r"--out: .*noise_flow holds a run "
                     r"trained on other images .*another --out"):
    learned_noise.main(["--noise", str(tmp_path / "noise_b.npz")] + args[2:])
  # Training on past the end would change the halving schedule: named by
  # this command's flag.
  longer = [a if a != "120" else "200" for a in args]
  with pytest.raises(SystemExit, match=r"--out: .*--noise-steps 120 or 121 "
                     r"\(now 200\)"):
    learned_noise.main(longer)
  # Noise of another shape than the measurements is named.
  np.savez(tmp_path / "noise4.npz", x=np.zeros((10, 4, 4, 1)))
  with pytest.raises(SystemExit, match="--noise: examples of shape"):
    learned_noise.main(["--noise", str(tmp_path / "noise4.npz")] + args[2:])


def test_bad_files_and_shapes_end_the_command_before_training(tmp_path,
                                                              capsys):
  """Missing files, a preset that does not exist, and measurements the
  prior cannot explain end the command naming the flag, before the noise
  flow trains (no noise_flow folder is made)."""
  from recover import learned_noise
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "noise16.npz", x=rng.integers(0, 255, (8, 16, 16, 1),
                                                     dtype=np.uint8))
  np.savez(tmp_path / "y16.npz", y=rng.uniform(size=(3, 16, 16, 1)))
  y_nan = rng.uniform(size=(3, 28, 28, 1))
  y_nan[1, 2, 3, 0] = np.nan
  np.savez(tmp_path / "y_nan.npz", y=y_nan)
  np.savez(tmp_path / "y_empty.npz", y=np.zeros((0, 28, 28, 1)))
  out = tmp_path / "out"
  base = ["--out", str(out), "--no-progress"]
  for args, match in [
      (["--noise", str(tmp_path / "none.npz"), "--measurements",
        str(tmp_path / "y16.npz")], r"--noise: "),
      (["--noise", str(tmp_path / "noise16.npz"), "--measurements",
        str(tmp_path / "none.npz")], r"--measurements: "),
      (["--noise", str(tmp_path / "noise16.npz"), "--measurements",
        str(tmp_path / "y16.npz"), "--truth", str(tmp_path / "none")],
       r"--truth: "),
      (["--noise", str(tmp_path / "noise16.npz"), "--measurements",
        str(tmp_path / "y16.npz")],
       r"--measurements: got shape \(16, 16, 1\), expected \(28, 28, 1\)"),
      # These had passed every early check: the NaN failed only after the
      # noise flow trained.
      (["--noise", str(tmp_path / "noise16.npz"), "--measurements",
        str(tmp_path / "y_nan.npz")], r"--measurements: .*holds 1 "
       "non-finite values"),
      (["--noise", str(tmp_path / "noise16.npz"), "--measurements",
        str(tmp_path / "y_empty.npz")], r"--measurements: .*holds no "
       "examples")]:
    with pytest.raises(SystemExit, match=match):
      learned_noise.main(base + args)
  assert not (out / "noise_flow").exists()
  with pytest.raises(SystemExit) as e:
    learned_noise.main(base + ["--noise", "n", "--measurements", "y",
                               "--noise-preset", "bogus"])
  assert e.value.code == 2 and "--noise-preset" in capsys.readouterr().err
