"""Per-program XLA options of the solvers."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import jax


def run_once_options() -> Optional[Dict[str, Any]]:
  """XLA options for a program that runs once per solve on CPU (decoding
  the result, the final selection, the optimiser's init): LLVM at -O0,
  which compiles the 28x28 prior's decoder in 40% of the default's time
  and runs it in 20 ms against 15 (recover's first call -1.1 s).

  Never for the step or the starts: -O1 compiles the step in 60% of the
  time at the same speed, but moves float results by an ulp here and
  there, which hundreds of optimiser steps amplify (a committed cell's
  mean moved by more than 0.01 dB).  None off CPU, and where
  ``XLA_FLAGS`` sets a level itself."""
  if jax.default_backend() != "cpu" or \
      "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
    return None
  return {"xla_backend_optimization_level": 0}
