r"""MovieLens-1M (ratings >= 4 are positives; see docs/datasets.md) at the paper's settings, meant for a GPU or TPU host.

  python -m launch.train --config configs/movielens.py --workdir /tmp/hgrank/movielens_logloss \
      --config.manual_dir=/path/to/official/files
  python -m launch.train --config configs/movielens.py:groupce --workdir /tmp/hgrank/movielens_groupce \
      --config.manual_dir=/path/to/official/files

Settings and variants: see ``common.official_config``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(arg=None):
  return common.official_config("movielens:1m", arg)
