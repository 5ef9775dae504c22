#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv and installs the
# package into it, then activates it. Sourced by launch/quickstart.sh and
# tests/run.sh, so both README commands need nothing but Python >= 3.10 and pip.
#
#   source launch/ensure_venv.sh [EXTRAS]     # EXTRAS e.g. "test" -> pip install -e ".[test]"
#
# Reinstalls only when setup.py or the requested extras change (a stamp file in
# .venv records what was installed). Override the interpreter with PYTHON=...
# and the location with HGRANK_VENV=...
_hg_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_hg_extras="${1:-}"
_hg_venv="${HGRANK_VENV:-$_hg_root/.venv}"
_hg_python="${PYTHON:-python3}"

if ! "$_hg_python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  echo "hgrank_jax needs Python >= 3.10; '$_hg_python' is $("$_hg_python" --version 2>&1)." >&2
  echo "Set PYTHON=/path/to/python3.10+ and rerun." >&2
  return 1 2>/dev/null || exit 1
fi
if [ ! -x "$_hg_venv/bin/python" ]; then
  echo "[hgrank_jax] creating virtual environment in $_hg_venv"
  "$_hg_python" -m venv "$_hg_venv" || { return 1 2>/dev/null || exit 1; }
fi
_hg_want="$( (cat "$_hg_root/setup.py"; echo "extras=$_hg_extras") | "$_hg_venv/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
_hg_stamp="$_hg_venv/.hgrank_install_${_hg_extras:-base}"
if [ ! -f "$_hg_stamp" ] || [ "$(cat "$_hg_stamp")" != "$_hg_want" ]; then
  echo "[hgrank_jax] installing hgrank_jax${_hg_extras:+[$_hg_extras]} into $_hg_venv (first run takes a few minutes)"
  "$_hg_venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  _hg_target="$_hg_root"
  [ -n "$_hg_extras" ] && _hg_target="$_hg_root[$_hg_extras]"
  if ! "$_hg_venv/bin/python" -m pip install -q -e "$_hg_target"; then
    echo "[hgrank_jax] pip install failed; see the messages above." >&2
    return 1 2>/dev/null || exit 1
  fi
  echo "$_hg_want" > "$_hg_stamp"
fi
# shellcheck disable=SC1091
source "$_hg_venv/bin/activate"
