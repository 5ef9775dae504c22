r"""The hierarchical simulator (``synthetic`` dataset): known user clusters drive preferences.

  python -m launch.train --config configs/simulator.py --workdir /tmp/hgrank/sim_logloss
  python -m launch.train --config configs/simulator.py:groupce --workdir /tmp/hgrank/sim_groupce
  python -m launch.train --config configs/simulator.py:runlocal,groupce --workdir /tmp/hgrank/sim_rl
  python -m launch.train --config configs/simulator.py:profiled,groupce --workdir /tmp/hgrank/sim_prof

Variants as in configs/kuairand_sig.py (logloss, pairwise, softmax, listce, jrc,
groupce, runlocal); the dataset size is ``config.dataset`` ("synthetic:tiny",
"synthetic:small" (default, 200k rows), "synthetic:default" (2M), "synthetic:large").
The logged position feeds the bias tower only (seed 004): used in training,
dropped at serving. The ``profiled`` variant trains on "synthetic:profiled": the same
world without position bias and with an observed user profile (true preference +
noise) in the user tower, the stand-in for the paper's rich user features.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(arg=None):
  variants = [v for v in (arg or "").split(",") if v]
  profiled = "profiled" in variants
  config = common.base_config()
  config.dataset = "synthetic:profiled" if profiled else "synthetic:small"
  config.learning_rate = 1e-3
  config.num_train_steps = 3000
  config.eval_every_steps = 35    # one epoch of the 140k training rows at batch 4096
  config.log_every_steps = 35
  # The profiled logs have no position bias, so no bias tower either.
  config.model.bias_features = () if profiled else ("position",)
  return common.apply_variants(config, ",".join(v for v in variants if v != "profiled") or None)
