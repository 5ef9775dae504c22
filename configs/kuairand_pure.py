r"""KuaiRand-Pure (official files; see docs/datasets.md) at the paper's settings, meant for a GPU or TPU host.

  python -m launch.train --config configs/kuairand_pure.py --workdir /tmp/hgrank/kuairand_pure_logloss \
      --config.manual_dir=/path/to/official/files
  python -m launch.train --config configs/kuairand_pure.py:groupce --workdir /tmp/hgrank/kuairand_pure_groupce \
      --config.manual_dir=/path/to/official/files

Settings and variants: see ``common.official_config``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(arg=None):
  return common.official_config("kuairand:pure", arg)
