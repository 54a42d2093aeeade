"""Committed result cells reproduce: one per experiment, recomputed from
the recorded choice, the cell's mean PSNR to 0.01 dB.  Single images may
move more: a change that only regroups floating-point work (XLA fuses a
step differently) is amplified by hundreds of optimiser steps, by up to
0.7 dB on one image here, while the cell's mean holds to 0.01 dB; they
are held to 1 dB.

A cell is rerun whole, its 64 test images (and the 6 out-of-distribution
ones where the run had them) in one batch, in a fresh process with XLA's
default flags, as in the run: XLA's float results depend on the batch size
and the optimisation level (this suite compiles at the cheapest), and an
optimisation amplifies such differences (0.03 dB on one image of a batch
of 2 against 70; 0.3 dB on one of Bora et al.'s).  The default run checks
two cheap cells (Bora et al.'s VAE in 1-bit CS, Asim et al. with the small
Glow); ``python -m pytest -m slow`` checks one of every experiment and a
flow cell of each (up to a minute each on 2 cores).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mapflow as mf
from mapflow import data
from recover.paper import cells, methods, protocol, tables

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent / "results"

_FMNIST = "fashion_mnist_realnvp"
slow = pytest.mark.slow
# (folder, experiment, setting, method, prior)
CELLS = [
    # Bora et al. in each experiment (the engine with the VAE: cheap), and
    # Asim et al. with the small Glow.
    pytest.param("v1/one_bit", "one_bit", "m=800,s=1", "bora", _FMNIST,
                 marks=slow),
    # About 60 s, and 0.01 dB holds only on the kind of CPU that made it.
    # On an AMD EPYC of family 26 (2026-12-07) three cells miss, by the
    # same amounts at 282c7af and after: this one by 0.055 dB, SINUSOIDAL
    # ours by 1.61 dB on one image, digit-noise ours by 0.42 dB (their
    # fits are chaotic: a float's last bit sends Adam elsewhere).
    pytest.param("v1/subpixel", "subpixel", "keep=0.75", "asim",
                 "fashion_mnist_glow", marks=slow),
    pytest.param("v1/sinusoidal", "sinusoidal", "0.4", "bora", _FMNIST,
                 marks=slow),
    pytest.param("v1/radial", "radial", "0.8", "bora", _FMNIST, marks=slow),
    pytest.param("v1/digit_noise", "digits", "0.5x+digit", "bora", _FMNIST,
                 marks=slow),
    # BM3D, a MAP over the pixels, the isotropic ablation, Asim et al. on
    # 1-bit CS, ours over the digit flow's latent (about a minute each).
    pytest.param("v1/sinusoidal", "sinusoidal", "0.4", "bm3d", _FMNIST,
                 marks=slow),
    pytest.param("v1/digit_noise", "digits", "0.5x+digit", "bm3d", _FMNIST,
                 marks=slow),
    pytest.param("v1/sinusoidal", "sinusoidal", "0.4", "ours", _FMNIST,
                 marks=slow),
    pytest.param("v1/radial", "radial", "0.1", "ablation", _FMNIST,
                 marks=slow),
    pytest.param("v1/one_bit", "one_bit", "m=800,s=1", "asim", _FMNIST,
                 marks=slow),
    pytest.param("v1/digit_noise", "digits", "0.5x+digit", "ours", _FMNIST,
                 marks=slow),
]


def _task(ctx, experiment, setting, folder):
  if experiment in ("sinusoidal", "radial"):
    return next(cells.denoising_tasks(ctx, experiment, [float(setting)]))
  if experiment == "one_bit":
    s = dict(p.split("=") for p in setting.split(","))
    # The run drew one matrix of 3,200 rows for every m (its first m rows).
    return next(cells.one_bit_tasks(ctx, [(int(s["m"]), float(s["s"]))],
                                    3200))
  if experiment == "digits":
    rng = np.random.RandomState(0)
    digits = data.load("digits", "test").astype(np.float32) / 255.0
    digits = digits[rng.permutation(len(digits))]
    noise_prior, noise_params = mf.pretrained.load("digits_realnvp")
    n_val, n_test = len(ctx.images.x_val), len(ctx.images.x_test)
    return cells.digit_noise_task(ctx, noise_prior, noise_params,
                                  digits[:n_val],
                                  digits[n_val:n_val + n_test])
  # The first protocol drew one mask for every image.
  return cells.subpixel_task(ctx, per_image=not folder.startswith("v1/"))


@pytest.mark.parametrize("folder,experiment,setting,method,prior", CELLS)
def test_committed_cell_reproduces(folder, experiment, setting, method,
                                   prior):
  if not (ROOT / folder / "results.csv").is_file():
    pytest.skip(f"{folder} not committed")
  try:
    data.load("fashion_mnist", "test")
  except data.DatasetNotFoundError:
    pytest.skip("Fashion-MNIST IDX files not installed")
  env = dict(os.environ)
  # jaxlib's default convolutions (YNNPACK), which made these results:
  # mapflow's steps have run on XLA's own since 2026-12-07 (mapflow.xla).
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if f not in conftest_flags()]
  env["XLA_FLAGS"] = " ".join(flags + [mf.xla.jaxlib_convolutions_flag()
                                       or ""]).strip()
  env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), str(HERE)])
  args = repr((folder, experiment, setting, method, prior))
  out = subprocess.run(
      [sys.executable, "-c", f"import test_reproduce as t; t.check(*{args})"],
      env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "REPRODUCED" in out.stdout


def conftest_flags():
  import conftest
  return conftest._FLAGS.split()


def check(folder, experiment, setting, method, prior):
  """Reruns one committed cell and compares it (in a fresh process)."""
  f = ROOT / folder / "results.csv"
  x = data.load("fashion_mnist", "test")
  rows = [r for r in tables.read_rows(f)
          if r["experiment"] in (experiment, experiment + "_ood")
          and r["setting"] == setting and r["method"] == method]
  want = {r["image"]: float(r["psnr"]) for r in rows}
  value, start = tables.split_hyper(rows[0]["hyper"])
  val, test = protocol.protocol_indices(len(x))
  f32 = lambda i: x[i].astype(np.float32) / 255.0
  x_ood, ood_ids = None, ()
  if experiment in ("sinusoidal", "radial", "one_bit"):
    x_ood, ood_ids = data.ood_images(28)
    x_ood = x_ood.astype(np.float32) / 255.0
  p, pp = mf.pretrained.load(prior)
  decode, decode_params = (mf.pretrained.load("fashion_mnist_vae")
                           if method == "bora" else (None, None))
  images = cells.Images(f32(val), f32(test), tuple(int(i) for i in val),
                        tuple(int(i) for i in test), x_ood, tuple(ood_ids))
  ctx = cells.Context(ROOT / "unused", cells.Models(p, pp, decode,
                                                    decode_params),
                      images, cells.Options((method,)))
  task = _task(ctx, experiment, setting, folder)
  cell = cells._Cell(ctx, task, protocol.PROTOCOLS[experiment])
  m = methods.METHODS[method]
  st = None
  if m.family == "flow":
    default = {"one_bit": "zeros", "subpixel": "zeros"}.get(
        experiment, "measurements")
    st = methods.parse_start(start or default)
  value = float(value)
  if method == "bm3d" and folder.startswith("v1/"):
    value /= cells.bm3d_reference(task)  # v1 recorded σ itself
  x_hat = cell.solve(m, st, value, "test")
  got = np.asarray(mf.metrics.psnr(cell.x["test"], x_hat))
  ids = [str(i) for i in images.test_ids] + list(ood_ids)
  assert sorted(ids) == sorted(want)
  n = len(images.test_ids)
  gap = abs(got[:n].mean() - np.mean([want[i] for i in ids[:n]]))
  assert gap < 0.01, (folder, method, "mean off by", float(gap))
  diff = np.abs(got - np.array([want[i] for i in ids]))
  assert diff.max() < 1.0, (folder, method, ids[int(diff.argmax())],
                            float(diff.max()))
  print("REPRODUCED", folder, method, float(diff.max()))
