"""The README's example training commands learn: test GAUC clearly above chance."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_simulator_example_learns(tmp_path):
  env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  result = subprocess.run(
      [sys.executable, "-m", "launch.train", "--config", "configs/simulator.py:example",
       "--workdir", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  test = json.loads((tmp_path / "results.json").read_text())["test"]
  # Chance is 0.5; this run measured 0.601 (the full config reaches about 0.61).
  assert test["gauc"] > 0.57, test
