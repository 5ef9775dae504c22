r"""Runs the Layer 2 blending experiment and writes its tables and plots.

  python -m launch.blend --config configs/blend.py --workdir results/blend
  python -m launch.blend --config configs/blend.py:runlocal --workdir /tmp/blend

Writes table.md/.csv, targets.md, summary.json and PNG plots into --workdir.
"""

from absl import app, flags
from ml_collections import config_flags

from hgrank_jax.blend import experiment, report

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/blend.py[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", "results/blend", "where results are written")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  results = experiment.run_experiment(_CONFIG.value)
  checks = report.write_results(results, _WORKDIR.value)
  print(open(f"{_WORKDIR.value}/table.md").read())
  for target, measured, met in checks:
    print(f"[{'met' if met else 'MISSED'}] {target}: {measured}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
