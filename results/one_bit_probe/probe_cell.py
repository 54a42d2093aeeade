"""The probes' shared setup: the 1-bit CS cell of (m, s) as the experiment
builds it (3,200-row matrix, shipped prior, the protocol's images)."""
import contextlib
import sys

sys.path.insert(0, ".")  # run from the repository root
from recover import common
from recover.paper import cells, protocol


@contextlib.contextmanager
def one_bit_cell(m, s, methods, out):
  p = common.base_parser("probe", "probe")
  common.add_method_args(p, protocol.PROTOCOLS["one_bit"].methods)
  args = p.parse_args(["--out", out, "--methods", methods, "--no-ood",
                       "--no-figures"])
  for k, v in dict(m=800, scale=s, matrix_rows=3200).items():
    setattr(args, k, v)
  with common.make_context(args, "one_bit") as ctx:
    task = next(cells.one_bit_tasks(ctx, [(m, s)], 3200))
    yield task, cells._Cell(ctx, task, protocol.PROTOCOLS["one_bit"])
