r"""KuaiRand-Pure (official files; see docs/datasets.md) at the paper's settings, meant for a GPU or TPU host.

  python -m launch.train --config configs/kuairand_pure.py --workdir /tmp/hgrank/kuairand_pure_logloss \
      --config.manual_dir=/path/to/official/files
  python -m launch.train --config configs/kuairand_pure.py:groupce --workdir /tmp/hgrank/kuairand_pure_groupce \
      --config.manual_dir=/path/to/official/files

Settings and variants: see ``common.official_config``.
"""

from configs import common


def get_config(arg=None):
  """The config; ``arg``: comma-separated variants from ``common.TRAIN_VARIANTS``."""
  return common.official_config("kuairand:pure", arg, __file__)
