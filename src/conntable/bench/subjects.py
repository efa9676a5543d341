"""Every implementation the benchmarks compare, behind one small interface.

A subject offers ``add(key, value)``, ``touch(key)``, ``del subject.mapping[key]``,
``advance(now)`` (move time on without expiring), ``expire(now)`` (one expiry
pass), ``next_wakeup(now)`` (when a loop driving it would wake next) and
``close()``. For conntable these attributes *are* the table's own bound
methods and the table itself, so a workload pays no adapter call on top of
what a server would.

``create(name, idle_timeout, simulated=...)`` builds one: on real time
(``time.monotonic``, a real asyncio or uvloop loop) or on simulated time
(:mod:`.clocks`).
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from . import baselines, loop_baselines
from .clocks import RealClock, SimClock, VirtualClockLoop

#: The tick a sleeping loop never wakes more often than (conntable's default resolution).
RESOLUTION = 0.1
#: How often the dict registry's sweeper walks every entry.
SCAN_INTERVAL = 1.0

#: The name of the compiled table, the reference of every ratio.
REFERENCE = "conntable"


class Unavailable(Exception):
    """This subject cannot run here; the message says why, in one line."""


class TableSubject:
    """A conntable table; the attributes are the table's own methods."""

    def __init__(self, cls: type, idle_timeout: float) -> None:
        self.table = cls(idle_timeout, resolution=RESOLUTION, now=0.0)  # the workloads' clocks start at 0
        self.mapping = self.table
        self.add = self.table.add
        self.touch = self.table.touch
        self.touch_many = self.table.touch_many
        self._expire = self.table.expire
        self.timer_callbacks = 0
        self.loop = None  # needs no event loop: a server's loop sleeps until next_expiry()

    def __len__(self) -> int:
        return len(self.table)

    def advance(self, now: float) -> None:
        self._expire(now, 0)  # moves the table's clock; expires nothing

    def expire(self, now: float) -> List[Any]:
        return self._expire(now)

    def next_wakeup(self, now: float) -> Optional[float]:
        return self.table.next_expiry()

    def sizeof(self) -> int:
        import sys

        return sys.getsizeof(self.table)

    def close(self) -> None:
        self.table.clear()


class RegistrySubject:
    """A baseline registry, with the sweeper schedule a server would give it."""

    def __init__(self, registry: Any, wakeup: Callable[[Any, float], Optional[float]],
                 loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.registry = registry
        self.mapping = registry
        self.add = registry.add
        self.touch = registry.touch
        self.advance = registry.advance
        self.expire = registry.expire
        self._wakeup = wakeup
        self.loop = loop  # the loop that runs its timers, if it has its own

    def __len__(self) -> int:
        return len(self.registry)

    @property
    def timer_callbacks(self) -> int:
        return getattr(self.registry, "timer_callbacks", 0)

    def next_wakeup(self, now: float) -> Optional[float]:
        return self._wakeup(self.registry, now)

    def close(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.close()


# -- sweeper schedules -------------------------------------------------------
def _periodic(registry: Any, now: float) -> float:
    return now + SCAN_INTERVAL


def _until_earliest(registry: Any, now: float) -> Optional[float]:
    due = registry.next_due()
    return None if due is None else max(due, now + RESOLUTION)


def _own_timers(registry: Any, now: float) -> None:
    return None  # the registry's per-connection timers wake the loop themselves


# -- factories ---------------------------------------------------------------
def _compiled_table() -> type:
    try:
        return importlib.import_module("conntable._ctable").ConnectionTable
    except ImportError:
        raise Unavailable("the compiled extension is not built: conntable runs as pure Python only") from None


def _python_table() -> type:
    from conntable import PyConnectionTable

    return PyConnectionTable


def _new_loop(kind: str, simulated: bool) -> asyncio.AbstractEventLoop:
    if kind == "asyncio":
        return VirtualClockLoop() if simulated else asyncio.new_event_loop()
    if simulated:
        raise Unavailable("libuv's clock cannot be simulated: uvloop runs in the real-time workloads only")
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        raise Unavailable("uvloop is not installed (pip install 'conntable[bench]')") from None
    return uvloop.new_event_loop()


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    create: Callable[[float, bool], Any]
    #: Has a timer wheel (and so pays cascades at level boundaries).
    wheel: bool = False


def _table_kind(name: str, label: str, cls: Callable[[], type]) -> Kind:
    return Kind(name, label, lambda timeout, simulated: TableSubject(cls(), timeout), wheel=True)


def _registry_kind(name: str, label: str, cls: type, wakeup: Callable[[Any, float], Optional[float]]) -> Kind:
    def create(timeout: float, simulated: bool) -> RegistrySubject:
        clock = SimClock() if simulated else RealClock()
        return RegistrySubject(cls(timeout, clock), wakeup)

    return Kind(name, label, create)


def _loop_kind(name: str, label: str, cls: type, loop_kind: str) -> Kind:
    def create(timeout: float, simulated: bool) -> RegistrySubject:
        loop = _new_loop(loop_kind, simulated)
        return RegistrySubject(cls(timeout, loop), _own_timers, loop)

    return Kind(name, label, create)


KINDS: List[Kind] = [
    _table_kind(REFERENCE, "conntable", _compiled_table),
    _table_kind("conntable-py", "conntable, pure Python", _python_table),
    _registry_kind("dict-scan", "dict + full scan", baselines.ScanRegistry, _periodic),
    _registry_kind("odict-lru", "OrderedDict LRU", baselines.LRURegistry, _until_earliest),
    _registry_kind("heapq", "heapq, lazy deletion", baselines.HeapRegistry, _until_earliest),
    _loop_kind("call_later-asyncio", "call_later re-arm, asyncio", loop_baselines.CallLaterRegistry, "asyncio"),
    _loop_kind("call_later-uvloop", "call_later re-arm, uvloop", loop_baselines.CallLaterRegistry, "uvloop"),
    _loop_kind("lazy-call_at-asyncio", "lazy call_at, asyncio", loop_baselines.LazyCallAtRegistry, "asyncio"),
    _loop_kind("lazy-call_at-uvloop", "lazy call_at, uvloop", loop_baselines.LazyCallAtRegistry, "uvloop"),
]
BY_NAME: Dict[str, Kind] = {kind.name: kind for kind in KINDS}
NAMES: List[str] = [kind.name for kind in KINDS]

#: Rows that are not registries but put a figure in perspective.
REFERENCE_LABELS: Dict[str, str] = {
    "conntable-touch_many": "conntable touch_many (batches)",
    "dict-store": "dict: d[k] = v",
    "call-floor": "floor: no-op METH_O call ().count(k)",
    "bare-loop": "bare loop: for k in keys: pass",
    "keys-dict": "dict (d[k] = v; sweep: full scan)",
    "keys-odict": "OrderedDict (move_to_end)",
    "keys-ttlcache": "cachetools.TTLCache",
}


def create(name: str, idle_timeout: float, *, simulated: bool = False) -> Any:
    """A fresh, empty subject; raises :class:`Unavailable` if it cannot run here."""
    return BY_NAME[name].create(idle_timeout, simulated)


def label(name: str) -> str:
    kind = BY_NAME.get(name)
    return kind.label if kind else REFERENCE_LABELS.get(name, name)
