#!/usr/bin/env bash
# websockets' own tests of its asyncio server and client, run against conntable.websockets.serve.
#
#   tools/websockets-suite.sh WEBSOCKETS_CHECKOUT [--baseline] [unittest arguments...]
#
# WEBSOCKETS_CHECKOUT: a websockets source tree at the tag of the release to compare with
# (e.g. `git --git-dir=<mirror> archive 17.0.1 | tar -x -C /tmp/ws`). The script makes a
# temporary virtual environment, installs websockets from that checkout and conntable from
# this repository, copies the checkout's tests, and substitutes one line in each of
# tests/asyncio/test_server.py and test_client.py so that `serve` and `unix_serve` are
# conntable's. --baseline runs the same tests unchanged (plain websockets) for comparison.
# CONNTABLE_SOURCE=<dir> installs conntable from another tree (e.g. an older commit, for
# a before/after comparison). Extra arguments go to `python -m unittest` (e.g. a test name). Exit status: unittest's.
set -euo pipefail

checkout=${1:?usage: tools/websockets-suite.sh WEBSOCKETS_CHECKOUT [--baseline] [unittest args...]}
shift
baseline=0
if [[ ${1:-} == --baseline ]]; then baseline=1; shift; fi
root=$(cd "${CONNTABLE_SOURCE:-$(dirname "$0")/..}" && pwd)  # CONNTABLE_SOURCE: another conntable tree
checkout=$(cd "$checkout" && pwd)
[[ -f $checkout/tests/asyncio/test_server.py ]] || { echo "no tests/asyncio/test_server.py in $checkout" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/websockets-suite.XXXXXX")
trap 'rm -rf "$work"' EXIT
python=${PYTHON:-python3}
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" "$checkout"
"${pip[@]}" "$root"

cp -r "$checkout/tests" "$work/tests"
if (( ! baseline )); then
    # The one-line switch a user makes, in each file. SERVE_ONLY=1 leaves unix_serve websockets'
    # (for a conntable without one, e.g. before it had it).
    if [[ ${SERVE_ONLY:-0} == 1 ]]; then
        ours="serve"; client_line="from websockets.asyncio.server import unix_serve; from conntable.websockets import serve"
    else
        ours="serve, unix_serve"; client_line="from conntable.websockets import serve, unix_serve"
    fi
    sed -i "s/^from websockets\.asyncio\.server import \*\$/&; from conntable.websockets import $ours/" \
        "$work/tests/asyncio/test_server.py"
    sed -i "s/^from websockets\.asyncio\.server import serve, unix_serve\$/$client_line/" \
        "$work/tests/asyncio/test_client.py"
    grep -q "from conntable.websockets import $ours" "$work/tests/asyncio/test_server.py"
    grep -q "from conntable.websockets import serve" "$work/tests/asyncio/test_client.py"
fi
cd "$work"  # the tests import websockets from the venv, not from the checkout's src/
if (( $# )); then
    exec "$work/venv/bin/python" -m unittest "$@"
fi
"$work/venv/bin/python" -m unittest tests.asyncio.test_server tests.asyncio.test_client
