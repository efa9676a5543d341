#!/usr/bin/env bash
# Build the compiled core with AddressSanitizer + UndefinedBehaviorSanitizer in a throw-away
# virtual environment and run the core test suite under it. Writes only inside the repository,
# in build/ (ignored by git): the environment is build/sanitize-venv (SANITIZE_VENV to move it).
#   bash tools/sanitize.sh                 # core tests, default hypothesis profile
#   HYPOTHESIS_PROFILE=long bash tools/sanitize.sh tests/test_stateful.py
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${SANITIZE_VENV:-$root/build/sanitize-venv}
echo "sanitize.sh: building into $venv" >&2
CONNTABLE_SANITIZE=1 bash "$root/tools/build-venv.sh" "$venv"
cd "$root"
if [ $# -eq 0 ]; then
  set -- tests/test_table.py tests/test_lifecycle.py tests/test_stateful.py tests/test_package.py \
    tests/test_protocols.py tests/test_differential.py tests/test_reentrancy.py tests/test_threads.py \
    tests/test_nomemory.py tests/faults/test_faults_table.py tests/faults/test_faults_values.py
fi
# The Python binary is not instrumented: preload the runtime. Leak checking is
# off because CPython keeps interned objects alive at exit by design.
LD_PRELOAD=$(gcc -print-file-name=libasan.so) \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$venv/bin/python" -m pytest -p no:cacheprovider -s -q "$@"
