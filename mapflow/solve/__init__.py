"""Recovery by optimisation: one engine for any objective, and the paper's
solvers as wrappers over it.

* ``minimize(objective, y, data, ...)``: the engine (``engine.py``):
  jit-compiled, vmapped over examples, restarts and grid points, sharded
  over devices.
* ``recover`` (MAP, eq. 12), ``recover_asim``, ``recover_bora`` and
  ``sweep`` (a β x m grid in one program): ``api.py``.
* where a solve starts: ``starts.py``.
"""

from mapflow.solve.api import recover, recover_asim, recover_bora, sweep
from mapflow.solve.engine import (DEFAULT_LEARNING_RATE, DEFAULT_OPTIMIZER,
                                  RecoveryResult, SolverConfig,
                                  StalledWarning, clear_caches, compiled,
                                  default_chunk, minimize)
from mapflow.solve.starts import measurement_init

__all__ = ["recover", "recover_asim", "recover_bora", "sweep", "minimize",
           "RecoveryResult", "SolverConfig", "StalledWarning",
           "DEFAULT_LEARNING_RATE", "DEFAULT_OPTIMIZER", "clear_caches",
           "compiled", "default_chunk", "measurement_init"]
