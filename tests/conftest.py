import os

# The suite is dominated by XLA:CPU compile time of small flows, not by
# running them: the cheapest backend optimisation level compiles ~2.5x
# faster.  One eigen thread keeps tests from fighting a background job.
_FLAGS = ("--xla_cpu_multi_thread_eigen=false "
          "--xla_backend_optimization_level=0 "
          "--xla_llvm_disable_expensive_passes=true")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAGS).strip()
