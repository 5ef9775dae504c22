#!/usr/bin/env bash
# Trains one config on NVIDIA GPUs: one host, or several hosts as one JAX job.
#
# Not run on this project's machines (CPU only); see docs/scaling.md for what was.
# Needs a CUDA build of JAX in the environment, e.g. `pip install -U "jax[cuda12]"`.
#
# One GPU host (every local GPU; the global batch is split over them):
#   bash launch/run_gpu.sh configs/simulator.py:groupce /tmp/hgrank/sim_groupce
#   bash launch/run_gpu.sh configs/kuairand_sig.py /tmp/hg --config.batch_size=8192
#
# Several GPU hosts (one process per host, started on every host with the same
# arguments; HOST0 is reachable from the others on PORT; the workdir must be on a
# filesystem every host sees, since checkpoints are written collectively):
#   COORDINATOR=HOST0:1234 NUM_PROCESSES=4 PROCESS_ID=<0..3> \
#     bash launch/run_gpu.sh configs/simulator.py:groupce /shared/hgrank/sim_groupce
#
# Under Slurm nothing needs setting: `srun --nodes=4 --ntasks-per-node=1 bash
# launch/run_gpu.sh CONFIG WORKDIR` (JAX reads SLURM_* itself; with one task
# per GPU instead, each process sees one GPU). Open MPI (`mpirun -np N`) likewise.
#
# Environment:
#   COORDINATOR, NUM_PROCESSES, PROCESS_ID  -> --coordinator_address/--num_processes/--process_id
#   JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID  also work (read by launch.train)
#   CUDA_VISIBLE_DEVICES   restricts the GPUs of this process
#   XLA_PYTHON_CLIENT_MEM_FRACTION  GPU memory JAX preallocates (default 0.75)
#   JAX_COMPILATION_CACHE_DIR  persistent compilation cache (default ~/.cache/hgrank_jax/jax)
# SIGTERM (e.g. a preempted node) saves a checkpoint and exits 0; rerun to resume.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,30p' "$0"; exit 2
fi
cd "$(dirname "$0")/.."
CONFIG=$1; WORKDIR=$2; shift 2
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda,cpu}
ARGS=(--config="$CONFIG" --workdir="$WORKDIR")
if [[ -n "${COORDINATOR:-}" ]]; then
  ARGS+=(--coordinator_address="$COORDINATOR" --num_processes="${NUM_PROCESSES:?set NUM_PROCESSES}"
         --process_id="${PROCESS_ID:?set PROCESS_ID}")
fi
exec python -m launch.train "${ARGS[@]}" "$@"
