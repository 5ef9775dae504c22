r"""Trains one config: parse flags, then ``train_and_evaluate(config, workdir)``.

  python -m launch.train --config configs/kuairand_sig.py --workdir /tmp/hgrank/kuairand
  python -m launch.train --config configs/kuairand_sig.py:runlocal,groupce --workdir /tmp/hg \
      --config.learning_rate=3e-4

Rerunning the same command in the same workdir resumes from its last checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from hgrank_jax.train import enable_compilation_cache

from hgrank_jax.train.loop import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file[:variant]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints and metrics")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; --verbosity=0 shows it
  enable_compilation_cache()
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
