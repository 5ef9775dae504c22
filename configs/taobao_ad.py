r"""Taobao display-ad click data (Tianchi 56; see docs/datasets.md) at the paper's settings, meant for a GPU or TPU host.

  python -m launch.train --config configs/taobao_ad.py --workdir /tmp/hgrank/taobao_ad_logloss \
      --config.manual_dir=/path/to/official/files
  python -m launch.train --config configs/taobao_ad.py:groupce --workdir /tmp/hgrank/taobao_ad_groupce \
      --config.manual_dir=/path/to/official/files

Paper settings (seed 002, section 6.1.3): batch 4096, AdamW with learning rate
1e-4, embedding width max(floor(log2(cardinality)) * 2, 16), a 2-4 layer main
network of 64-512 units, codebook size 4-32 and 1-4 levels for GroupCE,
evaluation every 1000 steps with early stopping on validation GAUC. Variants as
in configs/kuairand_sig.py (logloss, pairwise, softmax, listce, jrc, groupce,
runlocal). The files are read into memory; nothing is downloaded.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(arg=None):
  return common.official_config("taobao_ad:default", arg)
