"""The main job leaves the checkout as it was: results go to runs/, which git ignores.

A copy of the working tree's tracked files is committed into a fresh repository;
``launch.reproduce`` runs there with the README main job's command at smoke size
(simulator, 2 training steps), and ``git status --porcelain`` must stay empty while
the run prints the folder its tables went to.
"""

import ast
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from configs import table1
from hgrank_jax.experiments import reproduce

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _git(cwd, *args):
  return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                        timeout=120).stdout


def _test_clone(dest: pathlib.Path) -> pathlib.Path:
  """A repository holding the working tree's tracked files (so uncommitted code is tested)."""
  files = _git(ROOT, "ls-files", "-z").split("\0")
  for name in filter(None, files):
    source = ROOT / name
    if source.is_file():  # tracked files deleted in the working tree are skipped
      (dest / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(source, dest / name)
  _git(dest, "init", "-q")
  _git(dest, "add", "-A")
  _git(dest, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clone")
  return dest


@pytest.mark.slow
def test_reproduce_leaves_checkout_clean_and_prints_where(tmp_path):
  clone = _test_clone(tmp_path / "clone")
  assert _git(clone, "status", "--porcelain") == ""
  env = {**os.environ, "PYTHONPATH": str(clone)}
  # The quick main job's command, shrunk to a smoke run: the same rows and writers.
  command = [sys.executable, "-m", "launch.reproduce",
             "--config", "configs/table1.py:simulator,runlocal",
             "--config.train.dataset=synthetic:tiny", "--config.train.batch_size=64",
             "--config.train.eval_batch_size=128", "--config.train.num_train_steps=2",
             "--config.train.eval_every_steps=2", "--config.train.log_every_steps=2",
             "--config.tables=('table1',)", "--config.num_seeds=1"]
  result = subprocess.run(command, cwd=clone, capture_output=True, text=True, timeout=900,
                          env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  out = clone / "runs" / "simulator"
  assert (out / "table1.md").is_file() and (out / "table2.md").is_file()
  assert f"Tables and plots written to {out.resolve()}/" in result.stdout
  assert _git(clone, "status", "--porcelain", "--untracked-files=all") == ""


def _workdir_default(launcher: pathlib.Path) -> str:
  """The default of ``flags.DEFINE_string("workdir", DEFAULT, ...)`` in a launcher's source."""
  for node in ast.walk(ast.parse(launcher.read_text())):
    if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "DEFINE_string"
        and node.args and getattr(node.args[0], "value", None) == "workdir"):
      return node.args[1].value
  raise AssertionError(f"{launcher} defines no --workdir")


def test_every_default_output_folder_is_ignored_by_git():
  workdir = reproduce.default_workdir(table1.get_config("kuairand_sig,quick"))
  assert workdir == "runs/kuairand_sig_quick"  # the folder the README's main job prints
  outputs = [f"{workdir}/table1.md", f"{workdir}/runs/logloss-0/results.json"]
  outputs += [f"{_workdir_default(ROOT / 'launch' / f'{name}.py')}/table.md"
              for name in ("rerank", "blend")]
  for path in outputs:
    assert not path.startswith("results/"), path
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, timeout=60)
    assert ignored.returncode == 0, f"{path} would show up in git status"
