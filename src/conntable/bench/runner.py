"""``python -m conntable bench``: run the workloads, print the tables, write JSON and a plot."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
from typing import Dict, List, Optional, Sequence, TextIO

from . import report, subjects
from .progress import Progress
from .workloads import ALL, LEGENDS, TITLES
from .workloads.base import Result, Settings

SIZES = [10_000, 100_000, 1_000_000]
QUICK_SIZES = [10_000, 100_000]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> Dict[str, str]:
    import conntable

    return {
        "cpu": f"{cpu_model()} ({os.cpu_count()} CPUs)",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "conntable": f"{conntable.__version__} ({conntable.IMPLEMENTATION})",
        "date": datetime.date.today().isoformat(),
    }


def _summary(results: List[Result]) -> str:
    shown = [r for r in results if r.value is not None][:4]
    text = ", ".join(
        (f"{r.variant}: " if r.variant else "") + report.format_value(r.value, r.unit) for r in shown)
    return text + (" ..." if len(results) > len(shown) else "")


@dataclasses.dataclass
class Outcome:
    results: List[Result]
    #: why a job could not run -> the jobs it skipped
    skipped: Dict[str, List[str]]


def run(workloads: Sequence[str], sizes: Sequence[int], settings: Settings,
        progress_stream: Optional[TextIO] = None) -> Outcome:
    scheduled = [((name, job.label.replace(f"n={size:,}", ""), size), job)
                 for name in workloads for size in sizes for job in ALL[name].jobs(size, settings)]
    progress = Progress([key for key, _ in scheduled], progress_stream)
    outcome = Outcome([], {})
    for _, job in scheduled:
        progress.begin(job.label)
        try:
            produced = job.run()
        except subjects.Unavailable as why:
            reason = str(why)
            if reason not in outcome.skipped:
                progress.note(reason)  # once per reason, not once per job
            outcome.skipped.setdefault(reason, []).append(job.label)
            progress.end("skipped")
            continue
        outcome.results.extend(produced)
        progress.end(_summary(produced))
        for result in produced:
            if result.detail.get("valid") is False:  # the workload's own check of what happened
                progress.note(f"{job.label} [{result.variant}]: unexpected outcome {result.detail}")
    return outcome


def write_json(path: str, outcome: Outcome, settings: Settings, info: Dict[str, str]) -> None:
    payload = {
        "machine": info,
        "settings": dataclasses.asdict(settings),
        "skipped": outcome.skipped,
        "results": [dataclasses.asdict(r) for r in outcome.results],
    }
    with open(path, "w") as out:
        json.dump(payload, out, indent=1)


def write_plot(path: str, outcome: Outcome, info: Dict[str, str]) -> None:
    from . import plot  # matplotlib's presence was checked with the arguments (conntable.__main__)

    plot.draw(outcome.results, TITLES, path, "; ".join(info.values()))
    print(f"plot: {path}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    settings = Settings.quick_run() if args.quick else Settings()
    if args.repeats is not None:
        settings = dataclasses.replace(settings, rounds=args.repeats)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    info = machine()
    outcome = run(args.workloads or list(ALL), sorted(sizes), settings)
    print(report.format_report(outcome.results, TITLES, LEGENDS, info))
    for reason, labels in outcome.skipped.items():
        print(f"\nnote: {reason} ({len(labels)} jobs skipped)")
    if args.json:
        write_json(args.json, outcome, settings, info)
        print(f"raw results: {args.json}", file=sys.stderr)
    if args.plot:
        write_plot(args.plot, outcome, info)
    return 0
