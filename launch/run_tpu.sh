#!/usr/bin/env bash
# Trains one config on a Cloud TPU VM, single host or a multi-host slice.
#
# Not run on this project's machines (CPU only); see docs/scaling.md for what was.
#
# On one TPU VM host (e.g. v5litepod-8; all its chips form the data mesh):
#   bash launch/run_tpu.sh configs/simulator.py:groupce /tmp/hgrank/sim_groupce
#
# On a multi-host slice, run the same command on every worker at once; JAX finds
# the workers through the TPU metadata (this script passes --distributed=on), so
# no coordinator address is needed. The workdir must be one directory every worker
# mounts (Filestore/NFS, or a bucket mounted with gcsfuse; the workdir is a local
# path, gs:// URLs are not supported):
#   gcloud compute tpus tpu-vm ssh my-tpu --zone=us-central2-b --worker=all --command="
#     cd hgrank_jax && bash launch/run_tpu.sh configs/simulator.py:groupce /mnt/shared/hgrank/sim"
#
# Setup on every worker first (once):
#   gcloud compute tpus tpu-vm ssh my-tpu --zone=us-central2-b --worker=all --command="
#     git clone <this repository> hgrank_jax && cd hgrank_jax &&
#     pip install -e . && pip install -U 'jax[tpu]'"
#
# On GKE TPU node pools (TPU_WORKER_HOSTNAMES set), auto-detection already applies.
# Preemption of a spot/preemptible slice sends SIGTERM: a checkpoint is saved and
# the command exits 0; rerun the same command on the recreated slice to resume.
# DISTRIBUTED=off forces a single-process run.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,25p' "$0"; exit 2
fi
cd "$(dirname "$0")/.."
CONFIG=$1; WORKDIR=$2; shift 2
export JAX_PLATFORMS=${JAX_PLATFORMS:-tpu,cpu}
MODE=${DISTRIBUTED:-}
if [[ -z "$MODE" ]]; then
  # More than one worker in the slice: initialise jax.distributed (auto-detected).
  WORKERS=$(curl -s -m 5 -H "Metadata-Flavor: Google" \
    "http://metadata.google.internal/computeMetadata/v1/instance/attributes/worker-network-endpoints" \
    2>/dev/null | tr ',' '\n' | grep -c . || true)
  MODE=$([[ "${WORKERS:-0}" -gt 1 ]] && echo on || echo auto)
fi
exec python -m launch.train --config="$CONFIG" --workdir="$WORKDIR" --distributed="$MODE" "$@"
