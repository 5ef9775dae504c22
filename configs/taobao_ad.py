r"""Taobao display-ad click data (Tianchi 56; see docs/datasets.md) at the paper's settings, meant for a GPU or TPU host.

  python -m launch.train --config configs/taobao_ad.py --workdir /tmp/hgrank/taobao_ad_logloss \
      --config.manual_dir=/path/to/official/files
  python -m launch.train --config configs/taobao_ad.py:groupce --workdir /tmp/hgrank/taobao_ad_groupce \
      --config.manual_dir=/path/to/official/files

Settings and variants: see ``common.official_config``.
"""

from configs import common


def get_config(arg=None):
  """The config; ``arg``: comma-separated variants from ``common.TRAIN_VARIANTS``."""
  return common.official_config("taobao_ad:default", arg, __file__)
