r"""The hierarchical simulator (``synthetic`` dataset): known user clusters drive preferences.

  python -m launch.train --config configs/simulator.py --workdir /tmp/hgrank/sim_logloss
  python -m launch.train --config configs/simulator.py:groupce --workdir /tmp/hgrank/sim_groupce
  python -m launch.train --config configs/simulator.py:runlocal,groupce --workdir /tmp/hgrank/sim_rl

Variants as in configs/kuairand_sig.py (logloss, pairwise, softmax, listce, jrc,
groupce, runlocal); the dataset size is ``config.dataset`` ("synthetic:tiny",
"synthetic:small" (default, 200k rows), "synthetic:default" (2M), "synthetic:large").
The logged position feeds the bias tower only (seed 004): used in training,
dropped at serving.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(arg=None):
  config = common.base_config()
  config.dataset = "synthetic:small"
  config.learning_rate = 1e-3
  config.num_train_steps = 3000
  config.eval_every_steps = 35    # one epoch of the 140k training rows at batch 4096
  config.log_every_steps = 35
  config.model.bias_features = ("position",)
  return common.apply_variants(config, arg)
