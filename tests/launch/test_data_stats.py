"""launch.data_stats end to end, as a user runs it."""

import json
import os
import subprocess
import sys
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(*args):
  return subprocess.run([sys.executable, "-m", "launch.data_stats", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, env=os.environ.copy())


def test_given_view_summary(tmp_path):
  out = tmp_path / "stats.json"
  result = _run("--dataset", "kuairand_sig:given", "--json", str(out))
  assert result.returncode == 0, result.stderr
  assert "| train | 184172 | 16971 | 4373 | 81677 |" in result.stdout
  stats = json.loads(out.read_text())
  assert stats["splits"]["valid"]["users_with_positive"] == 7674
  assert stats["splits"]["test"]["users"] == 15425
  groups = stats["user_groups"]
  assert groups["cold"]["users"] + groups["warm"]["users"] + groups["other"]["users"] == 16971


def test_paper_view_reports_removed_duplicates():
  result = _run("--dataset", "kuairand_sig:paper")
  assert result.returncode == 0, result.stderr
  assert "duplicate_rows_removed: 7854" in result.stdout


def test_unknown_view_is_a_clear_error():
  result = _run("--dataset", "kuairand_sig:dev")
  assert result.returncode != 0
  assert "no view 'dev'; views are ['given', 'paper']" in result.stderr
