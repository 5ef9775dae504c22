#!/usr/bin/env bash
# The README's test command: installs hgrank_jax[test] into .venv (first run only)
# and runs the whole suite on 2 pytest-xdist workers (HGRANK_TEST_WORKERS, 0 =
# serial; a file's tests stay on one worker). Extra arguments go to pytest, e.g.
#   bash tests/run.sh -m "not slow"      # the fast subset
#   bash tests/run.sh tests/data -x
# pytest exits 5 when it collects no test; that counts as a failure here.
set -uo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  cat <<'USAGE'
usage: bash tests/run.sh [PYTEST ARGUMENTS...]

Installs hgrank_jax[test] into .venv (first run only; PYTHON=/path/to/python3.10+
picks the interpreter, HGRANK_VENV another location) and runs pytest on tests/.
Every argument goes to pytest:
  bash tests/run.sh                       # the whole suite
  bash tests/run.sh -m "not slow"         # the fast subset (tests under 20 s)
  bash tests/run.sh tests/data -x         # one folder, stop at the first failure
  bash tests/run.sh -- --help             # pytest's own help
Tests run on HGRANK_TEST_WORKERS pytest-xdist workers (default 2, one per core
of the CI machine; 0 runs them serially in this process), each test file on one
worker so module fixtures are built once.
Exits with pytest's status; collecting no test counts as a failure.
USAGE
  exit 0
fi
[ "${1:-}" = "--" ] && shift
cd "$(dirname "$0")/.."
source launch/ensure_venv.sh test || exit 1
python -m pytest -n "${HGRANK_TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "tests/run.sh: pytest collected no tests; treating that as a failure." >&2
  exit 1
fi
exit "$rc"
