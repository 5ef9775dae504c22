r"""The bundled KuaiRand subset (``paper`` view): one Table 1 row per objective variant.

  python -m launch.train --config configs/kuairand_sig.py --workdir /tmp/hgrank/ks_logloss
  python -m launch.train --config configs/kuairand_sig.py:groupce --workdir /tmp/hgrank/ks_groupce
  python -m launch.train --config configs/kuairand_sig.py:runlocal,listce --workdir /tmp/hgrank/rl

Variants (comma-separated): logloss (default), pairwise, softmax, listce, jrc,
groupce; runlocal shrinks the run to seconds on a CPU. The data has only user and
item ids (features embedded with the paper's width rule). The learning rate is
1e-3 rather than the paper's 1e-4: with 176k training rows an epoch is 43 steps
at batch 4096, and 1e-4 needs thousands of steps to converge; the Table 1
reproduction selects it on validation.
"""

from configs import common


def get_config(arg=None):
  """The config; ``arg``: comma-separated variants from ``common.TRAIN_VARIANTS``."""
  config = common.base_config()
  config.dataset = "kuairand_sig:paper"
  config.learning_rate = 1e-3
  config.num_train_steps = 3000
  config.eval_every_steps = 43    # about one epoch of the training split
  config.log_every_steps = 43
  config.early_stopping.patience = 5
  return common.apply_variants(config, arg, __file__)
