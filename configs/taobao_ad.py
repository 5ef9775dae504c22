r"""Taobao display-ad click data (Tianchi 56; see docs/datasets.md) at the paper's settings, meant for a GPU or TPU host.

  python -m launch.train --config configs/taobao_ad.py --workdir /tmp/hgrank/taobao_ad_logloss \
      --config.manual_dir=/path/to/official/files
  python -m launch.train --config configs/taobao_ad.py:groupce --workdir /tmp/hgrank/taobao_ad_groupce \
      --config.manual_dir=/path/to/official/files

Settings and variants: see ``common.official_config``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(arg=None):
  return common.official_config("taobao_ad:default", arg)
