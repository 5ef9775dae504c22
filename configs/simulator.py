r"""The hierarchical simulator (``synthetic`` dataset): known user clusters drive preferences.

  python -m launch.train --config configs/simulator.py --workdir /tmp/hgrank/sim_logloss
  python -m launch.train --config configs/simulator.py:groupce --workdir /tmp/hgrank/sim_groupce
  python -m launch.train --config configs/simulator.py:example --workdir /tmp/hgrank/sim_example
  python -m launch.train --config configs/simulator.py:runlocal,groupce --workdir /tmp/hgrank/sim_rl
  python -m launch.train --config configs/simulator.py:profiled,groupce --workdir /tmp/hgrank/sim_prof

Variants as in configs/kuairand_sig.py (logloss, pairwise, softmax, listce, jrc,
groupce, runlocal), plus ``example``. Two small sizes, for different purposes:

- ``runlocal`` is a smoke run for tests (20 steps of 256 rows, a few seconds):
  it checks that everything runs, resumes and writes its files. 5,000 rows cannot
  teach 5,000 item embeddings anything, so its metrics sit at chance (test GAUC
  0.47-0.48 here); do not read them.
- ``example`` is the smallest run that learns (100 steps of 1,024 rows, about
  0.7 of an epoch, learning rate 3e-3; under a minute of training on 2 CPU cores):
  test GAUC about 0.60 against 0.5 for chance and 0.61 for the full 3,000-step
  config, whose early stopping keeps the best epoch.

The dataset size is ``config.dataset`` ("synthetic:tiny",
"synthetic:small" (default, 200k rows), "synthetic:default" (2M), "synthetic:large").
The logged position feeds the bias tower only: used in training,
dropped at serving. The ``profiled`` variant trains on "synthetic:profiled": the same
world without position bias and with an observed user profile (true preference +
noise) in the user tower, the stand-in for the paper's rich user features.
"""

from configs import common


VARIANTS = (*common.TRAIN_VARIANTS, "example", "profiled")


def get_config(arg=None):
  """The config; ``arg``: comma-separated names from ``VARIANTS``."""
  variants = common.parse_variants(arg, VARIANTS, __file__)
  profiled = "profiled" in variants
  config = common.base_config()
  config.dataset = "synthetic:profiled" if profiled else "synthetic:small"
  config.learning_rate = 1e-3
  config.num_train_steps = 3000
  config.eval_every_steps = 35    # one epoch of the 140k training rows at batch 4096
  config.log_every_steps = 35
  # The profiled logs have no position bias, so no bias tower either.
  config.model.bias_features = () if profiled else ("position",)
  if "example" in variants:
    config.batch_size = 1024
    config.num_train_steps = 100
    config.eval_every_steps = 25
    config.log_every_steps = 25
    config.learning_rate = 3e-3
    config.model.hidden_layers = (32, 16)
  return common.apply_variants(config, [v for v in variants if v in common.TRAIN_VARIANTS])
