"""End to end: launch.blend at the runlocal size writes every promised output."""

import csv
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_launch_blend_runlocal_writes_results(tmp_path):
  sys.path.insert(0, ROOT)
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from launch import blend as launch_blend  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  with flagsaver.flagsaver():
    flags.FLAGS(["blend", f"--config={ROOT}/configs/blend.py:runlocal", f"--workdir={tmp_path}"])
    # Three variants keep the test short; the target checks need exactly these.
    launch_blend._CONFIG.value.variants = (  # pylint: disable=protected-access
        "+ pacing (unshaded)", "+ shading with pacing", "+ governance")
    launch_blend.main(["blend"])
  for name in ("table.md", "table.csv", "targets.md", "summary.json", "loads.png", "lambda.png",
               "reliability.png", "lambda_check.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  with open(tmp_path / "table.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["variant"] for r in rows] == [
      "+ pacing (unshaded)", "+ shading with pacing", "+ governance"]
  for column in ("platform value / request", "engagement / request", "oscillation amplitude",
                 "score drift", "ad load error"):
    assert column in rows[0]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert len(summary["targets"]) >= 10
  assert set(summary["ece"]) == {"article", "short_video", "live", "ad"}
