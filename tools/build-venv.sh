#!/usr/bin/env bash
# Make (or reuse) a virtual environment at $1 with the core tests' dependencies, and build
# conntable into it from this checkout with the build switches in the environment
# (CONNTABLE_SANITIZE, CONNTABLE_SYMBOLS, ...; see setup.py). Needs no activated environment:
# the interpreter is $PYTHON, else python3 on PATH. Used by sanitize.sh and valgrind.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$1
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip -c "$root/tools/build-constraints.txt" \
  setuptools Cython wheel pytest hypothesis
"$venv/bin/python" -m pip install --quiet --no-build-isolation --force-reinstall --no-deps "$root"
