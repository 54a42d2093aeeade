import os

# Tests are small; one XLA thread pool per test process keeps them snappy
# and avoids fighting a background training job for cores.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
