"""The runnable example in docs/losses_and_metrics.md must keep running."""

import pathlib
import re

DOC = (pathlib.Path(__file__).resolve().parents[2] / "docs"
       / "losses_and_metrics.md")


def test_user_guide_example_runs(capsys):
  blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
  assert blocks, "the user guide lost its example"
  exec(compile(blocks[0], str(DOC), "exec"), {})
  printed = capsys.readouterr().out
  assert "gauc" in printed and "nan" not in printed.lower()
