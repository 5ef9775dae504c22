r"""MovieLens-1M (ratings >= 4 are positives; see docs/datasets.md) at the paper's settings, meant for a GPU or TPU host.

  python -m launch.train --config configs/movielens.py --workdir /tmp/hgrank/movielens_logloss \
      --config.manual_dir=/path/to/official/files
  python -m launch.train --config configs/movielens.py:groupce --workdir /tmp/hgrank/movielens_groupce \
      --config.manual_dir=/path/to/official/files

Settings and variants: see ``common.official_config``.
"""

from configs import common


def get_config(arg=None):
  """The config; ``arg``: comma-separated variants from ``common.TRAIN_VARIANTS``."""
  return common.official_config("movielens:1m", arg, __file__)
