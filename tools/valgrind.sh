#!/usr/bin/env bash
# Run the core tests of the compiled table under valgrind memcheck (slow:
# about six minutes here) and report errors and definite leaks whose stack
# passes through conntable's code. CPython's own known reports (unsuppressed
# here) are counted separately.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
log=${VALGRIND_LOG:-/tmp/conntable-valgrind.log}
cd "$root"
PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
  --errors-for-leak-kinds=definite --num-callers=40 --log-file="$log" \
  python -m pytest -p no:cacheprovider -q tests/test_table.py tests/test_lifecycle.py tests/test_stateful.py \
  -k "cython and not million"
python3 - "$log" <<'PY'
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
