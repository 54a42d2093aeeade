"""The README's API example runs as written."""

import re
from pathlib import Path


def test_readme_api_example_runs(tmp_path, monkeypatch):
  text = (Path(__file__).parent.parent / "README.md").read_text()
  api = text[text.index("## API"):]
  code = re.search(r"```python\n(.*?)```", api, re.S).group(1)
  monkeypatch.chdir(tmp_path)
  exec(compile(code, "README.md", "exec"), {})
