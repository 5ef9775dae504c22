"""The README's shell entry points answer --help with their own usage."""

import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_run_sh_help_prints_its_usage_without_installing_or_testing():
  for flag in ("--help", "-h"):
    result = subprocess.run(["bash", "tests/run.sh", flag], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bash tests/run.sh [PYTEST ARGUMENTS...]")
    assert 'bash tests/run.sh -m "not slow"' in result.stdout
    assert "pytest" in result.stdout and "[hgrank_jax] installing" not in result.stdout
