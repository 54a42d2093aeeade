"""The README's API example runs: as written under -m slow, and by default
with its prior narrowed (the same kinds of layers, fewer of them, 4
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


def readme_api_code():
  """Every python block of the API section, in order, as one program (a
  later block uses the first one's names)."""
  text = (Path(__file__).parent.parent / "README.md").read_text()
  api = text[text.index("## API"):]
  api = api[:api.index("\n## ", 1)]
  blocks = re.findall(r"^( *)```python\n(.*?)^ *```", api, re.S | re.M)
  assert len(blocks) >= 2, "the API section's examples went missing"
  return "\n".join(textwrap.dedent(code) for _, code in blocks)


@pytest.mark.parametrize("narrow", [
    True, pytest.param(False, marks=pytest.mark.slow)])
def test_readme_api_example_runs(tmp_path, monkeypatch, narrow):
  code = readme_api_code()
  assert PRESET in code
  if narrow:
    code = code.replace(PRESET, NARROW)
  monkeypatch.chdir(tmp_path)
  exec(compile(code, "README.md", "exec"), {})
