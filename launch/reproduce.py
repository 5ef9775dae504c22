r"""Reproduces the paper's tables on one dataset into --workdir and prints where.

  python -m launch.reproduce --config configs/table1.py[:dataset[,quick|,core|,runlocal]]
  python -m launch.reproduce --config configs/table1.py:kuairand_sig,quick \
      --workdir results/kuairand_sig_quick   # regenerate the committed tables

Without --workdir the tables go to runs/<name>/ (``runs/kuairand_sig_quick/`` for
the second command), which git ignores, so a reproduction leaves the checkout as
it was. Finished runs are reused and interrupted ones resumed, so rerunning the
same command continues where it stopped. See configs/table1.py for the variants.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from hgrank_jax.experiments import reproduce as experiment
from hgrank_jax.parallel import enable_compilation_cache

_CONFIG = config_flags.DEFINE_config_file("config", "configs/table1.py",
                                          "configs/table1.py[:variants]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "where tables, plots and training runs are written "
                               "(default runs/<name>; runs/ is ignored by git)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  enable_compilation_cache()
  config = _CONFIG.value
  experiment.run(config, _WORKDIR.value or experiment.default_workdir(config))


if __name__ == "__main__":
  app.run(main)
