#!/usr/bin/env bash
# The README's test command: installs hgrank_jax[test] into .venv (first run only)
# and runs the whole suite. Extra arguments go to pytest, e.g.
#   bash tests/run.sh -m "not slow"      # the fast subset
#   bash tests/run.sh tests/data -x
# pytest exits 5 when it collects no test; that counts as a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
source launch/ensure_venv.sh test || exit 1
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "tests/run.sh: pytest collected no tests; treating that as a failure." >&2
  exit 1
fi
exit "$rc"
