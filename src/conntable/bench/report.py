"""Plain-text tables: one per workload (and scenario), implementations down, sizes across.

Each cell holds the figure and its ratio to conntable's compiled table at
the same size, measured in the same run: above 1.00x is slower (or bigger)
than conntable, below is faster.
"""

from __future__ import annotations

import textwrap
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Tuple

from . import subjects
from .workloads.base import Result

Group = Tuple[str, str]

#: How each unit is shown; counts get no ratio (a ratio to zero says nothing).
UNIT_TITLES = {
    "s/op": "time per operation",
    "s/pass": "time per pass",
    "CPU s/simulated s": "CPU time per simulated second",
    "B/conn": "bytes per connection",
    "callbacks/min": "timer callbacks in the minute",
}


def format_value(value: Optional[float], unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "B/conn":
        return f"{value:,.1f} B"
    if unit == "callbacks/min":
        return f"{value:,.0f}"
    for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if value >= scale or suffix == "ns":
            shown = value / scale
            return f"{shown:,.{0 if shown >= 100 else 1 if shown >= 10 else 2}f} {suffix}"
    raise AssertionError


def group_results(results: Iterable[Result]) -> "OrderedDict[Group, List[Result]]":
    groups: "OrderedDict[Group, List[Result]]" = OrderedDict()
    for result in results:
        groups.setdefault((result.workload, result.variant), []).append(result)
    return groups


def references(results: Iterable[Result]) -> Dict[Tuple[str, str, int], float]:
    """(workload, variant, size) -> conntable's figure there.

    A memory measure that does not apply to the compiled table (tracemalloc)
    is compared to its ``sys.getsizeof``.
    """
    results = list(results)
    ref = {(r.workload, r.variant, r.size): r.value
           for r in results if r.subject == subjects.REFERENCE and r.value}
    for r in results:
        own_size = ref.get((r.workload, "sys.getsizeof", r.size))
        if r.unit == "B/conn" and own_size:
            ref.setdefault((r.workload, r.variant, r.size), own_size)
    return ref  # type: ignore[return-value]  # values are truthy floats


def format_table(title: str, results: List[Result], reference: Dict[Tuple[str, str, int], float]) -> str:
    sizes = sorted({r.size for r in results})
    names = list(OrderedDict.fromkeys(r.subject for r in results))
    unit = results[0].unit
    cells = {(r.subject, r.size): r for r in results}
    ratio = {} if unit == "callbacks/min" else {
        (r.subject, r.size): r.value / reference[(r.workload, r.variant, r.size)]
        for r in results if r.value is not None and (r.workload, r.variant, r.size) in reference}
    rows = [["implementation"] + [f"n={size:,}" for size in sizes]]
    for name in names:
        row = [subjects.label(name)]
        for size in sizes:
            result = cells.get((name, size))
            text = "-" if result is None else format_value(result.value, unit)
            if (name, size) in ratio:
                text += f"  {ratio[(name, size)]:6.2f}x"
            row.append(text)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title, "-" * len(title)]
    for i, row in enumerate(rows):
        lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(results: List[Result], titles: Dict[str, str], legends: Dict[str, str],
                  machine: Dict[str, str]) -> str:
    out = [
        "conntable benchmarks: " + ", ".join(f"{k} {v}" for k, v in machine.items()),
        "ratio: implementation / conntable (compiled), same size, same run; above 1.00x is slower or bigger.",
    ]
    reference = references(results)
    explained = set()
    for (workload, variant), group in group_results(results).items():
        unit = group[0].unit
        title = titles.get(workload, workload) + (f" [{variant}]" if variant else "")
        title += f"; {UNIT_TITLES.get(unit, unit)}" + (", best round" if unit.startswith(("s/", "CPU")) else "")
        out.append("")
        out.append(format_table(title, group, reference))
        if workload not in explained and workload in legends:
            explained.add(workload)
            out.append(textwrap.fill(legends[workload], width=110))
    return "\n".join(out)
