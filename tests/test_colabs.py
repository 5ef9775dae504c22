"""Executes every notebook in colabs/ at small size and checks what it prints.

The rule every notebook follows: ``HGRANK_RUNLOCAL=1`` shrinks its work to seconds;
unset (or any other value) it runs at the size its first cell describes, the size
of the outputs committed with it. A notebook that raises fails its test with the
cell's error; one that runs but prints a missing row or a non-finite number fails
on the checks below.
"""

import math
import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|nan|inf)(?!\w)")
TABLE1_ROWS = ("LogLoss", "LogLoss + PairwiseLogistic", "LogLoss + SoftmaxCE", "LogLoss + ListCE",
               "JRC", "GroupCE")

# notebook -> [(line prefix, how many numbers the line must hold, all finite)]
FINITE_LINES = {
    "blending_and_pacing": [("  article", 2), ("  short_video", 2), ("  live", 2), ("  ad ", 2),
                            ("+ shading with pacing ", 6), ("+ governance ", 6)],
    "data_quickstart": [("| train | ", 4),
                        ("per-device shard shape", 1)],
    "differentiable_sorting": [("hard ranks:", 5), ("fast ", 3), ("softsort ", 3),
                               ("argsort2 ", 3)],
    "quickstart": [("best step", 2), ('  "gauc":', 1)]
                  + [(f"| {name} | ", 4) for name in TABLE1_ROWS],
    "rerank_with_quotas": [("greedy feasible on", 4), ("initial order ", 3),
                           ("constrained greedy ", 3), ("Seq2Slate + quota, beam 4 ", 3)],
}
# notebook -> text that must appear verbatim
MUST_PRINT = {
    "blending_and_pacing": ["held-out ECE (raw -> calibrated):"],
    "data_quickstart": ["| train | 184172 | 16971 | 0.4435 | 15928 |",
                        "| train | 175972 | 16974 | 0.3964 | 16042 |", "duplicate_rows_removed"],
    "differentiable_sorting": ["method           n  forward ms  fwd+bwd ms"],
    "quickstart": ['"test"', "smoke run (HGRANK_RUNLOCAL=1)"],
    "rerank_with_quotas": ["infeasible quota: infeasible constraints",
                           "constrained greedy           utility"],
}


def _printed(notebook) -> str:
  """Everything the executed cells printed or displayed as text, in order."""
  parts = []
  for cell in notebook.cells:
    for output in cell.get("outputs", []):
      if "text" in output:
        parts.append(output["text"])
      data = output.get("data", {})
      parts.append(data.get("text/markdown", ""))
  return "\n".join(parts)


def test_colabs_folder_has_notebooks_or_readme():
  assert NOTEBOOKS or (ROOT / "colabs" / "README.md").exists()


def test_every_notebook_has_checks_and_one_runlocal_rule():
  assert sorted(FINITE_LINES) == sorted(MUST_PRINT) == [p.stem for p in NOTEBOOKS]
  for path in NOTEBOOKS:
    text = path.read_text()
    assert 'os.environ.get(\\"HGRANK_RUNLOCAL\\") == \\"1\\"' in text or (
        "os.environ.get('HGRANK_RUNLOCAL') == '1'" in text), path.name
    assert not re.search(r"\bissue \d+", text, re.I), f"{path.name} cites an issue number"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("HGRANK_RUNLOCAL", "1")
  monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  notebook = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(ROOT)}})
  client.execute()
  printed = _printed(notebook)
  for text in MUST_PRINT[path.stem]:
    assert text in printed, f"{path.name} did not print {text!r}"
  lines = printed.splitlines()
  for prefix, count in FINITE_LINES[path.stem]:
    matching = [line for line in lines if line.startswith(prefix)]
    assert matching, f"{path.name} printed no line starting {prefix!r}"
    for line in matching:
      values = [float(v) for v in NUMBER.findall(line[len(prefix):])]
      assert len(values) >= count and all(math.isfinite(v) for v in values), (path.name, line)
