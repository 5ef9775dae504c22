r"""Trains one config: parse flags, then ``hgrank_jax.experiments.runs.run(config, workdir)``.

  python -m launch.train --config configs/kuairand_sig.py --workdir /tmp/hgrank/kuairand
  python -m launch.train --config configs/kuairand_sig.py:runlocal,groupce --workdir /tmp/hg \
      --config.learning_rate=3e-4

Checkpoints, config.json, metrics.jsonl, results.json and predictions.npz go to
--workdir. Rerunning the same command in the same workdir resumes from its last
checkpoint (a finished one prints its saved results). SIGTERM or Ctrl-C saves a
checkpoint after the current step and exits 0.

Several processes (GPU hosts, TPU VM workers; see docs/scaling.md and
launch/run_gpu.sh, launch/run_tpu.sh): run the same command on each, adding

  --coordinator_address=HOST0:1234 --num_processes=N --process_id=I

or set JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID, or run under
Slurm/Open MPI (auto-detected), or pass --distributed=on on a Cloud TPU slice.
"""

from absl import app, flags, logging
from ml_collections import config_flags

# Importing the package touches no JAX backend, so jax.distributed can still start in main.
from hgrank_jax.experiments import runs as experiment
from hgrank_jax.parallel import enable_compilation_cache
from hgrank_jax.parallel.distributed import MODES, maybe_initialize_distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/X.py[:variants]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "directory for checkpoints, metrics and results; resumed when rerun")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "multi-process: host:port of process 0")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-process: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-process: this process's id")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", MODES,
                                 "auto: initialise jax.distributed when flags or the cluster "
                                 "environment say there are several processes; on: always; off")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; --verbosity=0 shows it
  # Before anything touches a JAX backend.
  maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                               mode=_DISTRIBUTED.value)
  enable_compilation_cache()
  experiment.run(_CONFIG.value, _WORKDIR.value)  # returns {"interrupted_at"} on SIGTERM: exit 0


if __name__ == "__main__":
  app.run(main)
