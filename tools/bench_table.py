"""The README's results table, from the JSON of one `python -m conntable bench --json PATH` run.

    python tools/bench_table.py bench.json > table.md

Prints the markdown table of the README's "Results" section (the rows a run
has; a row or a cell the run lacks is left out or shown as a dash), then the
same-run figures and ratios the prose under the table quotes, so that the
README's figures are copied from one run, not typed in by hand.
"""

from __future__ import annotations

import json
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from conntable.bench.report import format_value

#: (row label, workload, variant) in the README's order.
ROWS: Sequence[Tuple[str, str, str]] = (
    ("touch", "touch", ""),
    ("add + del", "churn", ""),
    ("pass, nothing due", "sweep", "nothing due"),
    ("pass, 0.1% due", "sweep", "0.1% due"),
    ("pass, 10% due", "sweep", "10% due"),
    ("CPU per simulated s", "mixed", ""),
    ("bytes/conn (RSS)", "memory", "RSS delta"),
    ("timer callbacks, idle minute", "wakeups", "idle minute"),
    ("timer callbacks, busy minute", "wakeups", "busy minute"),
)
#: (column title, subject) in the README's order.
COLUMNS: Sequence[Tuple[str, str]] = (
    ("conntable", "conntable"),
    ("twin", "conntable-py"),
    ("dict + scan", "dict-scan"),
    ("OrderedDict", "odict-lru"),
    ("heapq", "heapq"),
    ("call_later asyncio", "call_later-asyncio"),
    ("call_later uvloop", "call_later-uvloop"),
    ("lazy call_at asyncio", "lazy-call_at-asyncio"),
)
#: Rows whose figure does not depend on the size: shown once, as "any".
SIZELESS = {"wakeups"}

Key = Tuple[str, str, int, str]


def load(path: str) -> Tuple[Dict[str, str], Dict[Key, Tuple[float, str]]]:
    with open(path) as source:
        payload = json.load(source)
    values = {(r["workload"], r["variant"], r["size"], r["subject"]): (r["value"], r["unit"])
              for r in payload["results"]}
    return payload["machine"], values


def size_label(size: int) -> str:
    for scale, suffix in ((1_000_000, "M"), (1_000, "k")):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{suffix}"
    return str(size)


def cell(values: Dict[Key, Tuple[float, str]], key: Key) -> str:
    found = values.get(key)
    if found is None:
        return "–"
    value, unit = found
    return format_value(value, unit).replace(" us", " µs")


def table(values: Dict[Key, Tuple[float, str]]) -> List[str]:
    sizes = sorted({size for (_w, _v, size, _s) in values})
    shown = [size for size in sizes if size >= 100_000] or sizes
    lines = ["| | n | " + " | ".join(title for title, _ in COLUMNS) + " |",
             "|---|--:|" + "--:|" * len(COLUMNS)]
    for label, workload, variant in ROWS:
        row_sizes = [s for s in shown if (workload, variant, s, "conntable") in values]
        if workload in SIZELESS:
            row_sizes = row_sizes[-1:]
        for size in row_sizes:
            cells = [cell(values, (workload, variant, size, subject)) for _, subject in COLUMNS]
            if workload in SIZELESS:  # a count that grows with the size is shown per connection
                for column, (_, subject) in enumerate(COLUMNS):
                    counts = {values[(workload, variant, s, subject)][0]
                              for s in sizes if (workload, variant, s, subject) in values}
                    if len(counts) > 1:
                        cells[column] = f"{values[(workload, variant, size, subject)][0] / size:.3g} per conn"
            n = "any" if workload in SIZELESS else size_label(size)
            lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    return lines


def ratio(values: Dict[Key, Tuple[float, str]], a: Key, b: Key) -> Optional[float]:
    if a not in values or b not in values or values[b][0] == 0:
        return None
    return values[a][0] / values[b][0]


def same_run(values: Dict[Key, Tuple[float, str]]) -> List[str]:
    """The figures and ratios the prose under the table quotes, size by size."""
    lines = []
    sizes = sorted({size for (_w, _v, size, _s) in values if size >= 100_000})
    for size in sizes:
        n = size_label(size)

        def fig(workload: str, variant: str, subject: str) -> str:
            return cell(values, (workload, variant, size, subject))

        def rat(a: Tuple[str, str, str], b: Tuple[str, str, str]) -> str:
            r = ratio(values, (a[0], a[1], size, a[2]), (b[0], b[1], size, b[2]))
            return "–" if r is None else f"{r:.2f}x"

        touch = ("touch", "", "conntable")
        lines.append(
            f"- {n}: d[k] = v {fig('touch', '', 'dict-store')}, no-op METH_O {fig('touch', '', 'call-floor')}, "
            f"touch_many {fig('touch', '', 'conntable-touch_many')} per key; "
            f"sys.getsizeof {fig('memory', 'sys.getsizeof', 'conntable')} per connection. "
            f"touch/d[k]=v {rat(touch, ('touch', '', 'dict-store'))}, "
            f"touch/floor {rat(touch, ('touch', '', 'call-floor'))}, "
            f"touch_many/d[k]=v {rat(('touch', '', 'conntable-touch_many'), ('touch', '', 'dict-store'))}, "
            f"OrderedDict/touch {rat(('touch', '', 'odict-lru'), touch)}, "
            f"call_later asyncio/touch {rat(('touch', '', 'call_later-asyncio'), touch)}, "
            f"full scan/pass 0.1% due {rat(('sweep', '0.1% due', 'dict-scan'), ('sweep', '0.1% due', 'conntable'))}, "
            f"dict churn/conntable churn {rat(('churn', '', 'dict-store'), ('churn', '', 'conntable'))}.")
    return lines


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    machine, values = load(argv[0])
    print(f"{machine.get('cpu', '?')}, {machine.get('python', '?')}, conntable {machine.get('conntable', '?')}, "
          f"{machine.get('date', '?')}")
    print()
    print("\n".join(table(values)))
    print()
    print("\n".join(same_run(values)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
