"""keys: the general path (str and object keys) beside the int fast path, against dict-based caches.

The registries servers keep are keyed by strings (``uuid4().hex``
connection or session ids) and by the connection objects themselves. For
each kind of key (ints from a counter, ``uuid4().hex`` strings, plain
objects hashed by identity, as a WebSocket is) and each size:

* *touch*: ``touch(k)`` on random live keys (the very key objects stored,
  as a server touches the id it registered, so a str's hash is cached),
  beside ``d[k] = v`` on a dict of the same keys, ``od[k] = v;
  od.move_to_end(k)`` on an OrderedDict (an LRU's activity) and
  ``c[k] = v`` on a ``cachetools.TTLCache`` (which refreshes the entry's
  time to live);
* *churn*: a new key arrives, a random live one leaves (``t[new] = v;
  del t[old]``), the count steady;
* *sweep*: one pass of a sweeper that runs all along (the pass before it
  found nothing), removing the entries that fell due since (1% of them):
  ``expire(now)`` on the table, ``TTLCache.expire()``, popping the
  OrderedDict's stale front, a full scan of the dict (which does not know
  the order);
* *memory*: bytes per entry by RSS delta in a fresh process, the keys and
  the value existing before the baseline reading (not counted), and the
  table's own ``sys.getsizeof``.

Ratios are to the compiled table with the same kind of key, so each table
shows the cost of the general path next to the int path and the baselines.
"""

from __future__ import annotations

import collections
import gc
import json
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Sequence

from .. import subjects
from ..traffic import SEED, VALUE
from .base import IDLE_TIMEOUT, Job, Result, Settings, subject_job, timed
from .memory import rss_bytes

NAME = "keys"
TITLE = "keys: int, str and object keys"
LEGEND = ("str keys are uuid4().hex, object keys plain objects hashed by identity; touch and churn use the "
          "stored key objects. dict: d[k] = v; OrderedDict: od[k] = v; od.move_to_end(k); TTLCache: c[k] = v "
          "(cachetools, refreshing the time to live). sweep: 1% of the entries due per pass. Ratios are to "
          "conntable with the same kind of key.")
KINDS = ("int", "str", "object")
OPERATIONS = ("touch", "churn", "sweep")
ROWS = (subjects.REFERENCE, "conntable-py", "keys-dict", "keys-odict", "keys-ttlcache")
#: Operations per simulated clock step (the clock moves once per 1,000, as in touch).
PER_TICK = 1000
SWEPT = 0.01


class Conn:
    """An object key hashed by identity, as a WebSocket connection is."""

    __slots__ = ("__weakref__",)


def make_keys(kind: str, n: int, rng: random.Random) -> List[Any]:
    if kind == "int":
        return list(range(1, n + 1))
    if kind == "str":
        return [f"{rng.getrandbits(128):032x}" for _ in range(n)]  # uuid4().hex, reproducibly
    return [Conn() for _ in range(n)]


class Registry:
    """One subject: its mapping, how its clock moves, and its sweep, as a server would write them."""

    def __init__(self, row: str) -> None:
        self.row = row
        self.now = 0.0
        self.cache: Any = None
        if row in (subjects.REFERENCE, "conntable-py"):
            self.mapping = subjects.create(row, IDLE_TIMEOUT).table  # Unavailable if the extension is missing
        elif row == "keys-ttlcache":
            try:
                import cachetools
            except ImportError:
                raise subjects.Unavailable("cachetools is not installed (pip install 'conntable[bench]')") from None
            self.mapping = cachetools.TTLCache(maxsize=sys.maxsize, ttl=IDLE_TIMEOUT, timer=lambda: self.now)
        elif row == "keys-odict":
            self.mapping = collections.OrderedDict()
        else:
            self.mapping = {}
        self.table = row in (subjects.REFERENCE, "conntable-py")

    def advance(self, now: float) -> None:
        self.now = now
        if self.table:
            self.mapping.expire(now, 0)  # moves the table's clock; expires nothing

    def store(self, k: Any) -> None:
        """Register ``k`` now (untimed: filling)."""
        if self.row in ("keys-dict", "keys-odict"):
            self.mapping[k] = self.now  # the time of the last activity: what their sweep reads
        else:
            self.mapping[k] = VALUE

    def sweep(self, now: float) -> List[Any]:
        self.advance(now)
        if self.table:
            return self.mapping.expire(now)  # type: ignore[no-any-return]
        if self.row == "keys-ttlcache":
            return list(self.mapping.expire())
        cutoff, mapping = now - IDLE_TIMEOUT, self.mapping
        if self.row == "keys-odict":
            gone = []
            for k, last in mapping.items():  # oldest first: stop at the first live one
                if last > cutoff:
                    break
                gone.append(k)
        else:
            gone = [k for k, last in mapping.items() if last <= cutoff]  # a dict knows no order: a full scan
        for k in gone:
            del mapping[k]
        return gone


class KeysCase:
    """One operation on one row with one kind of key at one size."""

    def __init__(self, operation: str, kind: str, row: str, n: int, settings: Settings) -> None:
        self.operation, self.kind, self.row, self.n, self.settings = operation, kind, row, n, settings
        self.ops = n * SWEPT if operation == "sweep" else min(settings.max_ops, max(settings.min_ops, n // 4))
        self.ops = max(1, int(self.ops))

    def prepare(self) -> None:
        self.rng = random.Random(SEED)
        self.keys = make_keys(self.kind, self.n, self.rng)
        self.fresh = make_keys(self.kind, self.ops * (self.settings.rounds + self.settings.warmup + 1), self.rng) \
            if self.operation == "churn" else []
        if self.kind == "int":
            self.fresh = [k + self.n for k in self.fresh]
        self.subject = Registry(self.row)
        self._fill()

    def _fill(self) -> None:
        """``n`` entries; for a sweep the oldest ``SWEPT`` of them fall due at the pass."""
        subject = self.subject
        old = int(self.n * SWEPT) if self.operation == "sweep" else 0
        subject.advance(1.0)
        for k in self.keys[:old]:
            subject.store(k)
        subject.advance(2.0)
        for k in self.keys[old:]:
            subject.store(k)

    def setup(self) -> None:
        if self.operation == "touch":
            self.work = self.rng.choices(self.keys, k=self.ops)
        elif self.operation == "churn":
            live = self.keys
            pairs = []
            for _ in range(self.ops):
                slot = self.rng.randrange(len(live))
                new = self.fresh.pop()
                pairs.append((new, live[slot]))
                live[slot] = new
            self.work = pairs
        else:
            if len(self.subject.mapping) < self.n:  # the last round swept: refill (untimed)
                self.subject = Registry(self.row)
                self._fill()
            # A sweeper runs all along: a pass just before (untimed) found nothing due and did its
            # cascading; the timed pass finds the old entries (t=1) due, the rest (t=2) not yet.
            before = self.subject.sweep(IDLE_TIMEOUT + 0.9)
            assert not before, "the untimed pass found entries due"
            self.work = [1.0 + IDLE_TIMEOUT + 0.5]

    def run(self) -> None:
        subject = self.subject
        if self.operation == "sweep":
            swept = subject.sweep(self.work[0])
            self.detail = {"swept": len(swept), "valid": len(swept) == int(self.n * SWEPT)}
            return
        mapping, row, v = subject.mapping, self.row, VALUE
        if self.operation == "churn":  # the loops are inline: a registry's own code, no adapter call
            if row in ("keys-dict", "keys-odict"):
                now = subject.now
                for new, old in self.work:
                    mapping[new] = now
                    del mapping[old]
            else:
                for new, old in self.work:
                    mapping[new] = v
                    del mapping[old]
            return
        work, now = self.work, subject.now
        for i in range(0, len(work), PER_TICK):
            now += 0.1
            subject.advance(now)
            if subject.table:
                touch = mapping.touch
                for k in work[i:i + PER_TICK]:
                    touch(k)
            elif row == "keys-odict":
                move = mapping.move_to_end
                for k in work[i:i + PER_TICK]:
                    mapping[k] = now
                    move(k)
            elif row == "keys-dict":
                for k in work[i:i + PER_TICK]:
                    mapping[k] = v  # the yardstick: d[k] = v on the same keys
            else:
                for k in work[i:i + PER_TICK]:
                    mapping[k] = v  # TTLCache: a store refreshes the time to live

    def close(self) -> None:
        self.subject = None  # type: ignore[assignment]
        self.keys = self.fresh = self.work = []


def probe(row: str, kind: str, n: int) -> Dict[str, Any]:
    """Bytes per entry in this (fresh) process: RSS delta, and the table's own count."""
    try:
        subject = Registry(row)
    except subjects.Unavailable as why:
        return {"unavailable": str(why)}
    keys = make_keys(kind, n, random.Random(SEED))
    gc.collect()
    before = rss_bytes()
    for k in keys:
        subject.store(k)
    gc.collect()
    after = rss_bytes()
    out: Dict[str, Any] = {"RSS delta": None if before is None or after is None else (after - before) / n}
    if row in (subjects.REFERENCE, "conntable-py"):
        out["sys.getsizeof"] = sys.getsizeof(subject.mapping) / n
    return out


def probe_main(argv: Sequence[str]) -> None:
    print(json.dumps(probe(argv[0], argv[1], int(argv[2]))))


def _probe_in_subprocess(row: str, kind: str, n: int) -> Dict[str, Any]:
    code = f"import sys; from {__name__} import probe_main; probe_main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, row, kind, str(n)], capture_output=True, text=True,
                          check=False)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout)


def _memory_job(kind: str, size: int) -> Job:
    def run() -> List[Result]:
        with ThreadPoolExecutor(max_workers=2) as pool:
            probes = list(pool.map(lambda row: _probe_in_subprocess(row, kind, size), ROWS))
        results = []
        for row, probed in zip(ROWS, probes):
            if "unavailable" in probed or "error" in probed:
                results.append(Result(NAME, f"memory, {kind} keys", size, row, None, "B/conn", detail=probed))
                continue
            for measure in ("RSS delta", "sys.getsizeof"):
                if probed.get(measure) is not None:
                    variant = f"memory, {kind} keys" + ("" if measure == "RSS delta" else f", {measure}")
                    results.append(Result(NAME, variant, size, row, probed[measure], "B/conn"))
        return results

    return Job(f"{NAME} memory {kind} keys n={size:,} (fresh processes)", run)


def _timed_job(operation: str, kind: str, row: str, size: int, settings: Settings) -> Job:
    variant = f"{operation}, {kind} keys"
    unit = "s/pass" if operation == "sweep" else "s/op"

    def run() -> List[Result]:
        case = KeysCase(operation, kind, row, size, settings)
        result = timed(case, settings, workload=NAME, variant=variant, size=size, subject=row, unit=unit)
        if operation == "sweep":  # one pass per round, not per entry swept
            result.value, result.samples = result.value * case.ops, [s * case.ops for s in result.samples]
        return [result]

    return subject_job(NAME, variant, size, row, run)


def jobs(size: int, settings: Settings) -> List[Job]:
    out = [_timed_job(operation, kind, row, size, settings)
           for operation in OPERATIONS for kind in KINDS for row in ROWS]
    return out + [_memory_job(kind, size) for kind in KINDS]

