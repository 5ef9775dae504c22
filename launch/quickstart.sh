#!/usr/bin/env bash
# The README's main job: installs hgrank_jax into .venv (first run only) and runs
# it on the bundled KuaiRand subset. Extra arguments go to the Python command.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/ensure_venv.sh
python -m launch.data_stats --dataset kuairand_sig:given "$@"
python -m launch.data_stats --dataset kuairand_sig:paper "$@"
