"""``--plot``: cost against connection count, one panel per workload, log-log, one line per implementation.

matplotlib is optional (``pip install 'conntable[bench]'``); it is imported
only when a plot is asked for. Each implementation keeps its colour in every
panel; reference rows (dict, bare loop) are dotted.
"""

from __future__ import annotations

import math
from typing import Dict, List

from . import report, subjects
from .workloads.base import Result


def draw(results: List[Result], titles: Dict[str, str], path: str, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    groups = [(key, group) for key, group in report.group_results(results).items()
              if any(r.value for r in group)]
    names = list(dict.fromkeys(r.subject for r in results))
    palette = plt.get_cmap("tab20")
    colour = {name: palette(i % 20) for i, name in enumerate(names)}
    columns = 3
    rows = math.ceil(len(groups) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows + 1.2), squeeze=False)
    lines = {}
    for ax, ((workload, variant), group) in zip(axes.flat, groups):
        for name in names:
            points = sorted((r.size, r.value) for r in group if r.subject == name and r.value is not None)
            if points:
                lines[name], = ax.plot(
                    *zip(*points), "-" if name in subjects.BY_NAME else ":", marker="o", color=colour[name],
                    linewidth=2.8 if name == subjects.REFERENCE else 1.3)
        ax.set_xscale("log")
        if group[0].unit == "callbacks/min":
            ax.set_yscale("symlog", linthresh=1)  # zero wake-ups must stay on the chart
            ax.set_ylim(bottom=0, top=2 * max(r.value or 0 for r in group) + 1)
        else:
            ax.set_yscale("log")
        ax.set_title(titles.get(workload, workload) + (f"\n[{variant}]" if variant else ""), fontsize=9)
        ax.set_xlabel("connections")
        ax.set_ylabel(group[0].unit)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    fig.legend([lines[n] for n in names if n in lines], [subjects.label(n) for n in names if n in lines],
               loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(caption, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
