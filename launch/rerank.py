r"""Runs the Layer 3 reranking comparison and writes its table.

  python -m launch.rerank --config configs/rerank.py --workdir results/rerank
  python -m launch.rerank --config configs/rerank.py:runlocal --workdir /tmp/rerank

Writes rerank.md, rerank.csv and rerank.json into --workdir (see
hgrank_jax/rerank/experiment.py for the rows and columns).
"""

from absl import app, flags
from ml_collections import config_flags

from hgrank_jax.rerank import experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/rerank.py[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", "results/rerank", "where results are written")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  summary = experiment.run(_CONFIG.value)
  print(experiment.write(summary, _WORKDIR.value))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
