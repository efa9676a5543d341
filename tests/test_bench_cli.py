"""``python -m conntable bench``: every option is checked before anything runs, and the progress
line's estimate of the time left learns from the jobs already done."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

import conntable
from conntable.__main__ import parse_args
from conntable.bench.progress import Estimate, Progress, format_duration


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit:
        parse_args(list(argv))
    assert exit.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "-1"], "at least one timed round is needed, not -1"),
    (["--repeats", "0"], "at least one timed round is needed, not 0"),
    (["--repeats", "1.5"], "not a whole number"),
    (["--sizes", "inf"], "not a connection count: 'inf'"),
    (["--sizes", "10"], "too few connections"),
    (["--sizes", "2e9"], "more connections than a table holds"),
    (["--workloads", "nope"], "invalid choice"),
    (["--json", "/nonexistent/x.json"], "no such directory: /nonexistent"),
    (["--plot", "/nonexistent/x.png"], "no such directory: /nonexistent"),
])
def test_bad_options_fail_before_the_run(capsys, argv, message):
    assert message in usage_error(capsys, "bench", *argv)


def test_an_output_path_that_is_a_directory_is_refused(capsys, tmp_path):
    assert "is a directory" in usage_error(capsys, "bench", "--json", str(tmp_path))


def test_plot_formats_are_matplotlibs(capsys, tmp_path):
    err = usage_error(capsys, "bench", "--plot", str(tmp_path / "x.foo"))
    assert "must end in one of" in err and ".png" in err
    args = parse_args(["bench", "--plot", str(tmp_path / "x.svg"), "--json", str(tmp_path / "x.json")])
    assert args.plot.endswith("x.svg") and args.repeats is None


def test_plot_without_matplotlib_is_refused_before_the_run(tmp_path):
    # A child process whose matplotlib import fails, as in an install without the bench extra.
    code = ("import sys; sys.modules['matplotlib'] = None; from conntable.__main__ import main; "
            f"main(['bench', '--plot', {str(tmp_path / 'x.png')!r}])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "--plot needs matplotlib: pip install 'conntable[bench]'" in run.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        parse_args(["--version"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"conntable {conntable.__version__} (")
    assert ("compiled" if conntable.IMPLEMENTATION == "cython" else "pure-Python") in out


def test_estimate_grows_a_case_as_its_workload_grew():
    estimate = Estimate()
    assert estimate.remaining([("touch", "a", 10)]) is None  # nothing known yet: no estimate
    estimate.record(("touch", "a", 10), 1.0)
    estimate.record(("touch", "b", 10), 3.0)
    assert estimate.job(("touch", "a", 100)) == pytest.approx(10.0)  # no growth seen: linear
    estimate.record(("touch", "a", 100), 2.0)       # a grew 2x per 10x: cost ~ size ** log10(2)
    assert estimate.job(("touch", "b", 100)) == pytest.approx(6.0)
    assert estimate.job(("touch", "a", 1000)) == pytest.approx(4.0)  # the same growth, one more 10x
    assert estimate.job(("touch", "c", 10)) == pytest.approx(2.0)   # new case: the mean at 10
    assert estimate.job(("sweep", "a", 10)) == pytest.approx(6.0 / 120 * 10)  # s per connection
    assert estimate.remaining([("touch", "a", 100), ("touch", "b", 100)]) == pytest.approx(8.0)
    estimate.record(("sweep", "a", 10), 0.5)                        # sweep grows as touch did
    assert estimate.job(("sweep", "a", 100)) == pytest.approx(1.0)


def test_progress_line_shows_the_time_left():
    now = [0.0]
    out = io.StringIO()
    progress = Progress([("w", "a", 10), ("w", "a", 100), ("w", "b", 100)], out, clock=lambda: now[0])
    progress.begin("w n=10 a")
    now[0] = 2.0
    progress.end("done")
    progress.begin("w n=100 a")
    now[0] = 22.0
    progress.end("done")
    first, second = out.getvalue().splitlines()
    assert "left" not in first.split("w n=10")[0]       # the first job: no estimate yet
    # Written before a@100 is recorded: a@100 and b@100 are left, each 2 s x 10 connections.
    assert "~40s left" in second
    assert format_duration(3725) == "62m05s"


def test_a_tiny_run_writes_its_tables_json_and_plot(tmp_path):
    json_path, plot_path = tmp_path / "r.json", tmp_path / "r.png"
    run = subprocess.run(
        [sys.executable, "-m", "conntable", "bench", "--quick", "--workloads", "touch", "--sizes", "100",
         "--repeats", "1", "--json", str(json_path), "--plot", str(plot_path)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "touch: one activity on a random live connection" in run.stdout
    assert "left" in run.stderr  # the progress line's estimate
    results = json.loads(json_path.read_text())["results"]
    expected = {"conntable-py", "dict-store"} | ({"conntable"} if conntable.IMPLEMENTATION == "cython" else set())
    assert {r["subject"] for r in results} >= expected
    assert all(r["size"] == 100 and r["value"] > 0 for r in results if r["value"] is not None)
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_keys_workload_compares_every_kind_of_key(tmp_path):
    json_path = tmp_path / "keys.json"
    run = subprocess.run(
        [sys.executable, "-m", "conntable", "bench", "--quick", "--workloads", "keys", "--sizes", "1000",
         "--repeats", "1", "--json", str(json_path)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "unexpected outcome" not in run.stderr  # every sweep removed exactly the entries due
    results = json.loads(json_path.read_text())["results"]
    variants = {r["variant"] for r in results}
    for operation in ("touch", "churn", "sweep", "memory"):
        for kind in ("int", "str", "object"):
            assert f"{operation}, {kind} keys" in variants
    subjects = {r["subject"] for r in results if r["value"] is not None}
    assert {"conntable-py", "keys-dict", "keys-odict", "keys-ttlcache"} <= subjects
    assert all(r["detail"].get("valid", True) for r in results)
