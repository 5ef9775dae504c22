r"""Runs the Layer 3 reranking comparison and writes its table.

  python -m launch.rerank --config configs/rerank.py                  # into runs/rerank/
  python -m launch.rerank --config configs/rerank.py:runlocal --workdir /tmp/rerank
  python -m launch.rerank --config configs/rerank.py --workdir results/rerank  # committed table

Writes rerank.md, rerank.csv, rerank.json and pareto.png into --workdir (see
hgrank_jax/experiments/rerank.py for the rows and columns) and prints the table and
that folder. The default, runs/rerank, is ignored by git, so a run leaves the
checkout as it was; the committed results/rerank is rewritten only when asked for.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from hgrank_jax.experiments import rerank as experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/rerank.py[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", "runs/rerank",
                                 "where results are written (runs/ is ignored by git)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  summary = experiment.run(_CONFIG.value)
  print(experiment.write(summary, _WORKDIR.value))
  print(f"Results written to {os.path.abspath(_WORKDIR.value)}/")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
