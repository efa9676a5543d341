"""The readable lines the parent prints on request (SIGUSR1, or every ``stats_interval``): one per worker."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping

__all__ = ("worker_line", "total_line", "shutdown_line")

MIB = 1 << 20


def _count(n: Any) -> str:
    return f"{int(n):,}"


def _closed(closed: Mapping[str, int]) -> str:
    reasons = ", ".join(f"{reason} {_count(n)}" for reason, n in closed.items() if n)
    total = _count(sum(closed.values()))
    return f"{total} ({reasons})" if reasons else total


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def worker_line(index: int, stats: Mapping[str, Any], restarts: int) -> str:
    """``worker 0 pid 4242: 1,250 connections (peak ..., limit ..., breaker closed); opened ...``."""
    fds = "?" if stats["open_fds"] is None else _count(stats["open_fds"])
    limit = "?" if stats["max_fds"] is None else _count(stats["max_fds"])
    return (
        f"worker {index} pid {stats['pid']}: {_count(stats['active'])} connections (peak {_count(stats['peak'])}, "
        f"limit {_count(stats['max_connections'])}, breaker {'open' if stats['breaker_open'] else 'closed'}); "
        f"opened {_count(stats['opened_total'])}, closed {_closed(stats['closed_total'])}, "
        f"refused {_count(stats['rejected_total'])}, aborted {_count(stats['aborted_total'])}; "
        f"{_count(stats['tasks_active'])} tasks; {fds} of {limit} descriptors; "
        f"RSS {stats['resident_memory_bytes'] / MIB:.1f} MiB; up {_uptime(stats['uptime'])}, "
        f"{restarts} restart{'' if restarts == 1 else 's'}"
    )


def total_line(every: Iterable[Mapping[str, Any]]) -> str:
    """The sums over the workers that answered."""
    answers = list(every)
    closed: Dict[str, int] = {}
    for stats in answers:
        for reason, n in stats["closed_total"].items():
            closed[reason] = closed.get(reason, 0) + n

    def total(key: str) -> int:
        return sum(int(stats[key]) for stats in answers)

    return (
        f"all {len(answers)} workers: {_count(total('active'))} connections (limit {_count(total('max_connections'))}, "
        f"{total('breaker_open')} refusing); opened {_count(total('opened_total'))}, closed {_closed(closed)}, "
        f"refused {_count(total('rejected_total'))}, aborted {_count(total('aborted_total'))}; "
        f"RSS {total('resident_memory_bytes') / MIB:.1f} MiB"
    )


def shutdown_line(index: int, pid: int, report: Mapping[str, Any]) -> str:
    """What a worker's graceful shutdown did, from its STOPPED report."""
    return (
        f"worker {index} pid {pid} shut down: {_count(report['closed_gracefully'])} connections closed gracefully, "
        f"{_count(report['aborted'])} aborted, {_count(report['rejected'])} refused, "
        f"{_count(report['tasks_cancelled'])} tasks cancelled; {report['sockets_before']} sockets open before "
        f"serving (the listening one aside), {report['sockets_after']} after"
    )
