"""The benchmark harness (python -m bench); see BENCHMARKS.md."""

import os

# jaxlib runs LAPACK (a Glow's triangular solves on 12x12 to 96x96 matrices)
# through NumPy's OpenBLAS, whose threads then spin beside XLA's own and
# slowed the 64x64 Glow's CS step by 9% (0.55 -> 0.50 s, the same bits).
# Set before NumPy loads; a value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
