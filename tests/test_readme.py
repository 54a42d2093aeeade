"""The README's API example, then docs/guide.md's examples that continue
it, run: as written under -m slow, and by default with its prior narrowed (the same kinds of layers, fewer of them, 4
channels wide), since compiling the full preset's dozen programs is most
of a minute and not what this checks."""

import re
import textwrap
from pathlib import Path

import pytest

PRESET = 'mf.flows.preset("realnvp_fmnist_cpu")'
NARROW = ('mf.flows.RealNVPConfig(image_shape=(28, 28, 1), num_scales=2, '
          'num_blocks=1, hidden_channels=4, couplings_per_scale=1, '
          'final_couplings=1)')


def _python_blocks(text):
  return [textwrap.dedent(code) for _, code in
          re.findall(r"^( *)```python\n(.*?)^ *```", text, re.S | re.M)]


def readme_api_code():
  """Every python block of the README's API section, then every one of
  docs/guide.md, in order, as one program (the guide continues the
  README's example and uses its names)."""
  root = Path(__file__).parent.parent
  text = (root / "README.md").read_text()
  api = text[text.index("## API"):]
  api = api[:api.index("\n## ", 1)]
  readme = _python_blocks(api)
  guide = _python_blocks((root / "docs" / "guide.md").read_text())
  assert readme and guide, "the API examples went missing"
  assert "docs/guide.md" in api, "the README's API section lost its guide"
  return "\n".join(readme + guide)


@pytest.mark.parametrize("narrow", [
    True, pytest.param(False, marks=pytest.mark.slow)])
def test_readme_api_example_runs(tmp_path, monkeypatch, narrow):
  code = readme_api_code()
  assert PRESET in code
  if narrow:
    code = code.replace(PRESET, NARROW)
  monkeypatch.chdir(tmp_path)
  exec(compile(code, "README.md", "exec"), {})
