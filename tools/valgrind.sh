#!/usr/bin/env bash
# Run the core tests of the compiled table under valgrind memcheck (slow:
# about six minutes here) and report errors and definite leaks whose stack
# passes through conntable's code. CPython's own known reports (unsuppressed
# here) are counted separately. Needs no activated environment: it builds the
# release code with its debug information (CONNTABLE_SYMBOLS=1) into
# build/valgrind-venv and writes its log to build/valgrind.log (inside the
# repository, ignored by git; VALGRIND_VENV and VALGRIND_LOG move them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VALGRIND_VENV:-$root/build/valgrind-venv}
log=${VALGRIND_LOG:-$root/build/valgrind.log}
echo "valgrind.sh: building into $venv, log in $log" >&2
mkdir -p "$(dirname "$log")"
CONNTABLE_SYMBOLS=1 bash "$root/tools/build-venv.sh" "$venv"
cd "$root"
PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
  --errors-for-leak-kinds=definite --num-callers=40 --log-file="$log" \
  "$venv/bin/python" -m pytest -p no:cacheprovider -q tests/test_table.py tests/test_lifecycle.py tests/test_stateful.py \
  -k "cython and not million"
"$venv/bin/python" - "$log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
records = re.split(r"\n==\d+== \n", text)
ours = [r for r in records if re.search(r"(Invalid|uninitialised|definitely lost)", r) and "conntable" in r]
print("valgrind:", re.search(r"ERROR SUMMARY: .*", text).group(0))
print("definitely lost:", re.search(r"definitely lost: .*", text).group(0))
print("reports through conntable's code:", len(ours))
for r in ours[:5]:
    print(r)
sys.exit(1 if ours else 0)
PY
