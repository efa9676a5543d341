"""tools/bench_table.py: the README's results table is made from one bench run's JSON, cell by cell."""

from __future__ import annotations

import json
import os
import subprocess
import sys

TOOL = os.path.join(os.path.dirname(__file__), "..", "tools", "bench_table.py")


def result(workload, variant, size, subject, value, unit):
    return {"workload": workload, "variant": variant, "size": size, "subject": subject, "value": value,
            "unit": unit, "samples": [value], "detail": {}}


def run_tool(tmp_path, results):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"machine": {"cpu": "Test CPU (2 CPUs)", "python": "CPython 3.x",
                                            "conntable": "0 (cython)", "date": "2026-01-01"},
                                "settings": {}, "skipped": {}, "results": results}))
    done = subprocess.run([sys.executable, TOOL, str(path)], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_every_cell_comes_from_the_run_and_missing_ones_are_dashes(tmp_path):
    lines = run_tool(tmp_path, [
        result("touch", "", 10_000, "conntable", 9e-9, "s/op"),  # below 100k: not in the README
        result("touch", "", 100_000, "conntable", 24.7e-9, "s/op"),
        result("touch", "", 100_000, "conntable-py", 176e-9, "s/op"),
        result("touch", "", 100_000, "dict-store", 49.4e-9, "s/op"),
        result("touch", "", 100_000, "call-floor", 12.35e-9, "s/op"),
        result("touch", "", 1_000_000, "conntable", 2.5e-6, "s/op"),
        result("memory", "RSS delta", 1_000_000, "conntable", 70.6, "B/conn"),
        result("wakeups", "busy minute", 100_000, "conntable", 10, "callbacks/min"),
        result("wakeups", "busy minute", 1_000_000, "conntable", 10, "callbacks/min"),
        # A count that grows with the connections is shown per connection.
        result("wakeups", "busy minute", 100_000, "lazy-call_at-asyncio", 125_000, "callbacks/min"),
        result("wakeups", "busy minute", 1_000_000, "lazy-call_at-asyncio", 1_250_000, "callbacks/min"),
    ])
    assert lines[0] == "Test CPU (2 CPUs), CPython 3.x, conntable 0 (cython), 2026-01-01"
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| |")]
    assert rows[0] == "| touch | 100k | 24.7 ns | 176 ns | – | – | – | – | – | – |"
    assert rows[1] == "| touch | 1M | 2.50 µs | – | – | – | – | – | – | – |"
    assert rows[2] == "| bytes/conn (RSS) | 1M | 70.6 B | – | – | – | – | – | – | – |"
    assert rows[3] == "| timer callbacks, busy minute | any | 10 | – | – | – | – | – | – | 1.25 per conn |"
    assert len(rows) == 4
    (at_100k,) = [line for line in lines if line.startswith("- 100k:")]
    assert "d[k] = v 49.4 ns" in at_100k and "touch/d[k]=v 0.50x" in at_100k and "touch/floor 2.00x" in at_100k
    assert "OrderedDict/touch –" in at_100k


def test_usage_error_without_a_path():
    done = subprocess.run([sys.executable, TOOL], capture_output=True, text=True)
    assert done.returncode == 2 and "bench_table.py" in done.stderr
