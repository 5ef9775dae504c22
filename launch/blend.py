r"""Runs the Layer 2 blending experiment and writes its tables and plots.

  python -m launch.blend --config configs/blend.py                   # into runs/blend/
  python -m launch.blend --config configs/blend.py:runlocal --workdir /tmp/blend
  python -m launch.blend --config configs/blend.py --workdir results/blend   # the committed tables

Writes table.md/.csv, targets.md, summary.json and PNG plots into --workdir and
prints the table, the target checks and that folder. The default, runs/blend, is
ignored by git, so a run leaves the checkout as it was.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from hgrank_jax.experiments import blend_report as report
from hgrank_jax.experiments import blend as experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/blend.py[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", "runs/blend",
                                 "where results are written (runs/ is ignored by git)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  results = experiment.run_experiment(_CONFIG.value)
  checks = report.write_results(results, _WORKDIR.value)
  print(open(f"{_WORKDIR.value}/table.md").read())
  for target, measured, met in checks:
    print(f"[{'met' if met else 'MISSED'}] {target}: {measured}")
  print(f"Results written to {os.path.abspath(_WORKDIR.value)}/")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
