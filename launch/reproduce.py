r"""Reproduces the paper's tables on one dataset into runs/<name>/ and prints where.

  python -m launch.reproduce --config configs/table1.py[:dataset[,quick|,runlocal]]
  python -m launch.reproduce --config configs/table1.py:kuairand_sig,quick \
      --config.results_dir=results        # regenerate the committed results/kuairand_sig_quick/

runs/ is ignored by git, so a reproduction leaves the checkout as it was. Finished
runs are reused and interrupted ones resumed, so rerunning the same command
continues where it stopped. See configs/table1.py for the variants.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from hgrank_jax.parallel import enable_compilation_cache

from hgrank_jax.experiments.reproduce import reproduce

_CONFIG = config_flags.DEFINE_config_file("config", "configs/table1.py", "table config file[:variant]",
                                          lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  enable_compilation_cache()
  reproduce(_CONFIG.value)


if __name__ == "__main__":
  app.run(main)
