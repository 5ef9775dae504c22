"""Executes every notebook in colabs/ at small size (HGRANK_RUNLOCAL=1).

Each notebook reads HGRANK_RUNLOCAL and shrinks its work so the suite stays fast;
a notebook that raises fails its test with the cell's error.
"""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))


def test_colabs_folder_has_notebooks_or_readme():
  assert NOTEBOOKS or (ROOT / "colabs" / "README.md").exists()


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
