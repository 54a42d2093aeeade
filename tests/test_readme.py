"""The README's API example runs: as written under -m slow, and by default
with its prior narrowed (the same kinds of layers, fewer of them, 4
channels wide), since compiling the full preset's dozen programs is most
of a minute and not what this checks."""

import re
from pathlib import Path

import pytest

PRESET = 'mf.flows.preset("realnvp_fmnist_cpu")'
NARROW = ('mf.flows.RealNVPConfig(image_shape=(28, 28, 1), num_scales=2, '
          'num_blocks=1, hidden_channels=4, couplings_per_scale=1, '
          'final_couplings=1)')


def readme_api_code():
  text = (Path(__file__).parent.parent / "README.md").read_text()
  api = text[text.index("## API"):]
  return re.search(r"```python\n(.*?)```", api, re.S).group(1)


@pytest.mark.parametrize("narrow", [
    True, pytest.param(False, marks=pytest.mark.slow)])
def test_readme_api_example_runs(tmp_path, monkeypatch, narrow):
  code = readme_api_code()
  assert PRESET in code
  if narrow:
    code = code.replace(PRESET, NARROW)
  monkeypatch.chdir(tmp_path)
  exec(compile(code, "README.md", "exec"), {})
