"""memory: bytes per connection, each implementation in a fresh process.

Three measures, where they apply:

* *RSS delta*: resident memory after registering ``n`` connections, minus
  before (after the ids existed), in a process that did nothing else, so
  the allocator has no earlier free memory to hide growth in;
* *tracemalloc*: what Python's allocators handed out while registering;
  not for the compiled table, whose C arrays come from ``malloc``, which
  tracemalloc does not see. Tracing slows every allocation several times,
  so it runs up to 100k connections and not under ``--quick``; the RSS
  figures show it says the same thing;
* *sys.getsizeof*: conntable's own report, which includes its C arrays.

Ratios in every memory table are to the compiled table's ``sys.getsizeof``.

Values are one shared object and ids exist before the baseline reading, so
neither is counted: what is left is the registry's own cost per connection.
Event-loop registries include their timer handles (asyncio's heap, uvloop's
libuv timers).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from .. import subjects
from ..traffic import connection_ids, fill
from .base import IDLE_TIMEOUT, Job, Result, Settings

NAME = "memory"
TITLE = "memory: bytes per connection"
LEGEND = ("a fresh process per implementation and size; values and ids are not counted. "
          "Ratios are to conntable's sys.getsizeof.")
MEASURES = ("sys.getsizeof", "RSS delta", "tracemalloc")
TRACED_UP_TO = 100_000


class FillCase:
    """Registering ``n`` connections in an empty registry, timed (the pytest suite
    reports it beside the memory figures, which come from the same filling)."""

    def __init__(self, subject_name: str, n: int) -> None:
        self.subject_name = subject_name
        self.ops = n
        self.subject: Any = None

    def prepare(self) -> None:
        self.ids = connection_ids(self.ops)
        self.subject = subjects.create(self.subject_name, IDLE_TIMEOUT)

    def setup(self) -> None:
        if len(self.subject):
            self.close()
            self.subject = subjects.create(self.subject_name, IDLE_TIMEOUT)

    def run(self) -> None:
        fill(self.subject, self.ids)

    def close(self) -> None:
        if self.subject is not None:
            self.subject.close()


def rss_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import psutil  # type: ignore[import-not-found]
    except ImportError:
        return None
    return psutil.Process().memory_info().rss


def probe(name: str, n: int, traced: bool = True) -> Dict[str, Any]:
    """Measure one subject at one size, in this process (meant to be a fresh one)."""
    try:
        subject = subjects.create(name, IDLE_TIMEOUT)
    except subjects.Unavailable as why:
        return {"unavailable": str(why)}
    ids = connection_ids(n)
    gc.collect()
    before = rss_bytes()
    fill(subject, ids)
    gc.collect()
    after = rss_bytes()
    out: Dict[str, Any] = {"RSS delta": None if before is None else (after - before) / n}  # type: ignore[operator]
    if hasattr(subject, "sizeof"):
        out["sys.getsizeof"] = subject.sizeof() / n
    subject.close()
    del subject
    if not traced or name == subjects.REFERENCE:
        return out
    gc.collect()
    subject = subjects.create(name, IDLE_TIMEOUT)
    tracemalloc.start()
    fill(subject, ids)
    out["tracemalloc"] = tracemalloc.get_traced_memory()[0] / n
    tracemalloc.stop()
    subject.close()
    return out


def probe_main(argv: List[str]) -> None:
    """The entry point of the fresh process: ``NAME N TRACED``; prints JSON."""
    print(json.dumps(probe(argv[0], int(argv[1]), argv[2] == "1")))


def probe_in_subprocess(name: str, n: int, traced: bool) -> Dict[str, Any]:
    code = f"import sys; from {__name__} import probe_main; probe_main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, name, str(n), str(int(traced))],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout)


def results_for(size: int, names: List[str], probes: List[Dict[str, Any]]) -> List[Result]:
    results = []
    for name, probed in zip(names, probes):
        if "unavailable" in probed or "error" in probed:
            results.append(Result(NAME, "RSS delta", size, name, None, "B/conn", detail=probed))
            continue
        for measure in MEASURES:
            if probed.get(measure) is not None:
                results.append(Result(NAME, measure, size, name, probed[measure], "B/conn"))
    return results


def jobs(size: int, settings: Settings) -> List[Job]:
    traced = not settings.quick and size <= TRACED_UP_TO

    def run() -> List[Result]:
        # Two at a time: the machine has two cores, and memory is not a timing.
        with ThreadPoolExecutor(max_workers=2) as pool:
            probes = list(pool.map(lambda name: probe_in_subprocess(name, size, traced), subjects.NAMES))
        return results_for(size, subjects.NAMES, probes)

    return [Job(f"{NAME} n={size:,} (every implementation, fresh processes)", run)]

