"""The conntable command (also python -m conntable).

conntable bench runs conntable side by side with the connection registries
servers use today, on this machine, and prints one table per workload.
See conntable bench --help.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def parse_size(text: str) -> int:
    """A connection count: ``10000``, ``10k``, ``1M`` or ``1_000_000``."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    try:
        value = int(float(text[:-1] if scale != 1 else text.replace("_", "")) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a connection count: {text!r}") from None
    if value < 100:
        raise argparse.ArgumentTypeError(f"too few connections to measure: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .bench.workloads import ALL

    parser = argparse.ArgumentParser(prog="conntable", description=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser(
        "bench", help="benchmark conntable against today's connection registries",
        description="Benchmark conntable against the registries servers use today, side by side "
                    "in one process. Progress goes to stderr, the tables to stdout.")
    bench.add_argument("--quick", action="store_true",
                       help="10k and 100k connections, fewer and shorter rounds (under 30 s)")
    bench.add_argument("--sizes", nargs="+", type=parse_size, metavar="N",
                       help="connection counts (default 10k 100k 1M; --quick: 10k 100k)")
    bench.add_argument("--workloads", nargs="+", choices=list(ALL), metavar="NAME",
                       help=f"run only these workloads ({', '.join(ALL)})")
    bench.add_argument("--repeats", type=int, metavar="N", help="timed rounds per case (best is kept)")
    bench.add_argument("--json", metavar="PATH", help="write the raw results as JSON")
    bench.add_argument("--plot", metavar="PATH", help="draw cost against connections (needs matplotlib)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .bench import runner

    return runner.main(args)


if __name__ == "__main__":
    sys.exit(main())
