"""The house rules, checked: the library's imports form no cycle and never
reach the applications; no public function takes more than ten
parameters; every atomic write goes through ``mapflow.io``."""

import ast
import inspect
from pathlib import Path

import mapflow as mf

ROOT = Path(__file__).resolve().parents[1]
APPS = ("train", "recover", "bench")


def _module_name(path: Path) -> str:
  rel = path.relative_to(ROOT).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _imports(path: Path):
  """Every module a file imports (at top level or inside functions)."""
  tree = ast.parse(path.read_text())
  pkg = _module_name(path)
  if path.name != "__init__.py":
    pkg = pkg.rpartition(".")[0]
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        up = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
        base = ".".join(up + ([base] if base else []))
      out.add(base)
      # "from mapflow import io" imports the module mapflow.io.
      out.update(f"{base}.{a.name}" for a in node.names)
  return out


def _graph(package: str):
  files = sorted((ROOT / package).rglob("*.py"))
  names = {_module_name(f): f for f in files}
  graph = {}
  for name, f in names.items():
    graph[name] = {m for m in _imports(f) if m in names and m != name}
  return graph, {n: _imports(f) for n, f in names.items()}


def test_library_imports_form_no_cycle_and_no_application():
  graph, raw = _graph("mapflow")
  for name, mods in raw.items():
    bad = sorted(m for m in mods if m.split(".")[0] in APPS)
    assert not bad, f"{name} imports application code {bad}"
  # A package's __init__ re-exporting its submodules is not a cycle.
  for name in graph:
    graph[name] = {m for m in graph[name]
                   if not name.startswith(m + ".")}
  state = {}

  def visit(n, path):
    state[n] = "open"
    for m in sorted(graph[n]):
      if state.get(m) == "open":
        cycle = path[path.index(m):] + [m]
        raise AssertionError("import cycle: " + " -> ".join(cycle))
      if m not in state:
        visit(m, path + [m])
    state[n] = "done"

  for n in sorted(graph):
    if n not in state:
      visit(n, [n])


def test_no_public_function_takes_more_than_ten_parameters():
  seen = set()
  too_many = []

  def check(name, obj):
    if id(obj) in seen:
      return
    seen.add(id(obj))
    if inspect.isclass(obj):
      target = obj.__init__
      if getattr(obj, "_fields", None) is not None:  # NamedTuple
        if len(obj._fields) > 10:
          too_many.append((name, len(obj._fields)))
        return
    elif inspect.isfunction(obj):
      target = obj
    else:
      return
    try:
      params = [p for p in inspect.signature(target).parameters.values()
                if p.name not in ("self", "cls")]
    except (TypeError, ValueError):
      return
    if len(params) > 10:
      too_many.append((name, len(params)))

  import pkgutil
  import importlib
  for info in pkgutil.walk_packages(mf.__path__, "mapflow."):
    mod = importlib.import_module(info.name)
    for attr, obj in vars(mod).items():
      if attr.startswith("_") or getattr(obj, "__module__", None) != \
          mod.__name__:
        continue
      check(f"{mod.__name__}.{attr}", obj)
  assert not too_many, too_many


def test_atomic_writes_live_in_one_module():
  """``mkstemp`` and ``os.replace`` appear only in ``mapflow/io.py``."""
  offenders = []
  for package in ("mapflow",) + APPS:
    for f in (ROOT / package).rglob("*.py"):
      if f == ROOT / "mapflow" / "io.py":
        continue
      text = f.read_text()
      for needle in ("mkstemp", "os.replace(", ".replace(tmp"):
        if needle in text:
          offenders.append((str(f.relative_to(ROOT)), needle))
  assert not offenders, offenders
