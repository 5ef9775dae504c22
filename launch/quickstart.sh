#!/usr/bin/env bash
# The README's main job: installs hgrank_jax into .venv (first run only), prints a
# summary of the bundled KuaiRand subset, and reproduces the paper's Table 1 on it
# at the quick size (2 seeds, fixed hyperparameters; about 2 minutes of training
# on 2 CPU cores, measured with ../shared/tools/fresh-clone-check), printing the
# tables and, at the end, the folder they were written to:
# runs/kuairand_sig_quick/, which git ignores, so the checkout stays as it was.
# Rerunning reuses finished runs. Extra arguments go to launch.reproduce, e.g.
#   bash launch/quickstart.sh --config.num_seeds=5
#   bash launch/quickstart.sh --workdir results/kuairand_sig_quick   # the committed tables
set -euo pipefail
cd "$(dirname "$0")/.."
# An explicit (empty) extras argument: a bare `source` would hand this script's
# own arguments (e.g. --config.num_seeds=5) to ensure_venv.sh as its extras.
source launch/ensure_venv.sh ""
python -m launch.data_stats --dataset kuairand_sig:paper
python -m launch.reproduce --config configs/table1.py:kuairand_sig,quick "$@"
