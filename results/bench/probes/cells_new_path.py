# 2026-12-07, with mapflow.xla (XLA convolutions); run from the repository root with PYTHONPATH=.:tests
"""Committed v1 cells rerun with mapflow's own XLA options (new conv path):
the gap of the test mean PSNR to the committed one (absolute, as the
slow reproduction test reports it)."""
import sys, numpy as np
sys.path.insert(0, "tests")
import test_reproduce as t
import mapflow as mf
cells_ = [("v1/sinusoidal", "sinusoidal", "0.4", "ours"), ("v1/radial", "radial", "0.1", "ablation"),
          ("v1/one_bit", "one_bit", "m=800,s=1", "asim"), ("v1/digit_noise", "digits", "0.5x+digit", "ours"),
          ("v1/sinusoidal", "sinusoidal", "0.4", "bora")]
which = sys.argv[1:] and [cells_[int(i)] for i in sys.argv[1:]] or cells_
for folder, exp, setting, method in which:
    try:
        t.check(folder, exp, setting, method, "fashion_mnist_realnvp")
        print("CELL", folder, exp, setting, method, "reproduced within 0.01 dB", flush=True)
    except AssertionError as e:
        print("CELL", folder, exp, setting, method, "MISS", e, flush=True)
