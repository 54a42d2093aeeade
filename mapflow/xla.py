"""Per-program XLA options: the solvers', the sampler's and training's."""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any, Dict, Optional

import jax

_FLAG = "xla_cpu_experimental_ynn_fusion_type"
# YNNPACK keeps the dots it takes by default; convolutions go to XLA's own
# (Eigen) kernels.
_CONVOLUTIONS_ON_XLA = ((_FLAG, "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"),)


def jaxlib_convolutions_flag() -> Optional[str]:
  """The ``XLA_FLAGS`` entry that keeps jaxlib's default convolutions
  (adding a type its default list already holds), so that
  ``step_options`` steps aside; None where ``XLA_FLAGS`` already names the
  option, or on a jax older than 0.10, whose XLA may not know it (an
  unknown flag aborts the process).  Set it before JAX starts."""
  if _FLAG in os.environ.get("XLA_FLAGS", "") or \
      jax.__version_info__ < (0, 10):
    return None
  return f"--{_FLAG}=+individual_dot"


_EMITTERS = "xla_cpu_use_fusion_emitters"


def quick_compile_flags(xla_flags: Optional[str] = None) -> list:
  """``XLA_FLAGS`` entries for a CPU process whose programs compile for
  longer than they run (the demo, a test suite): LLVM at -O0, and XLA:CPU's
  older loop emitters in place of its MLIR fusion emitters.  At -O0 the
  older emitters compile the shipped prior's MAP step in about 60% of the
  time, and its bits come out the same (the VAE's and the Asim step's move
  in the last bits); at the default level they gain nothing (BENCHMARKS.md).

  Each entry is left out where ``xla_flags`` (default: ``XLA_FLAGS``)
  names its option already, and the emitters' on a jax older than 0.10,
  whose XLA may not know it (an unknown flag aborts the process).  Set them
  before JAX starts."""
  have = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
  flags = []
  if "xla_backend_optimization_level" not in have:
    flags.append("--xla_backend_optimization_level=0")
  if _EMITTERS not in have and jax.__version_info__ >= (0, 10):
    flags.append(f"--{_EMITTERS}=false")
  return flags


@functools.lru_cache(maxsize=1)
def _jaxlib_takes(options) -> bool:
  """Whether this jaxlib knows the options (older ones refuse the enum)."""
  try:
    jax.jit(lambda a: a + 1, compiler_options=dict(options)).lower(
        1.0).compile()
  except Exception as e:  # noqa: BLE001 - any refusal means "not here"
    warnings.warn(f"mapflow.xla: this jaxlib refused {dict(options)} "
                  f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                  "steps compile with jaxlib's default convolutions")
    return False
  return True


def step_options() -> Optional[Dict[str, Any]]:
  """XLA options for the programs that run a flow over and over on CPU
  (a solver's step, the sampler's steps, a training step): convolutions on
  XLA's own multi-threaded kernels instead of YNNPACK.

  jaxlib 0.10 hands a convolution and its neighbours to YNNPACK as one
  fusion that runs on about one core: the shipped RealNVP's MAP step used
  1.13 of 2 cores.  On XLA's kernels it uses 1.9 of them, and on a 2-core
  AMD EPYC (Zen 5) the step ran 1.3x faster (batch 64: 0.27 -> 0.20 s),
  the 64x64 Glow's CS step 1.1x, a RealNVP training step 1.14x
  (BENCHMARKS.md).  Float results move in the last
  bits, which hundreds of optimiser steps carry on as any regrouping of
  sums does (the same 64 images after 100 steps: 20.95 against 20.96 dB);
  they are options of the outermost jit only (JAX refuses them on a jit
  called inside another, or under ``grad`` or ``scan``);
  the results committed up to 2026-12-07 were made without it.

  None off CPU, where ``XLA_FLAGS`` sets
  ``--xla_cpu_experimental_ynn_fusion_type`` itself (e.g. ``=+individual_dot``
  restores jaxlib's default, to rerun an older result bit for bit), and
  where this jaxlib lacks the option (a warning says so, once)."""
  if jax.default_backend() != "cpu" or \
      _FLAG in os.environ.get("XLA_FLAGS", ""):
    return None
  if not _jaxlib_takes(_CONVOLUTIONS_ON_XLA):
    return None
  return dict(_CONVOLUTIONS_ON_XLA)


def run_once_options() -> Optional[Dict[str, Any]]:
  """XLA options for a program that runs once per solve on CPU (decoding
  the result, the final selection, the optimiser's init): LLVM at -O0,
  which compiles the 28x28 prior's decoder in 40% of the default's time
  and runs it in 20 ms against 15 (recover's first call -1.1 s), with the
  step's convolutions (``step_options``).

  Never -O0 for the step or the starts: -O1 compiles the step in 60% of
  the time at the same speed, but moves float results by an ulp here and
  there, which hundreds of optimiser steps amplify (a committed cell's
  mean moved by more than 0.01 dB).  None off CPU; no level where
  ``XLA_FLAGS`` sets one itself."""
  if jax.default_backend() != "cpu":
    return None
  options = dict(step_options() or {})
  if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    options["xla_backend_optimization_level"] = 0
  return options or None
