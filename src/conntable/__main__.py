"""The conntable command (also python -m conntable).

conntable bench runs conntable side by side with the connection registries
servers use today, on this machine, and prints one table per workload.
See conntable bench --help.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

#: The most connections a table holds (``conntable._common.MAX_CAPACITY``).
MAX_SIZE = 1 << 30


def parse_size(text: str) -> int:
    """A connection count: ``10000``, ``10k``, ``1M`` or ``1_000_000``."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    try:
        value = int(float(text[:-1] if scale != 1 else text.replace("_", "")) * scale)
    except (ValueError, OverflowError):  # OverflowError: "inf"
        raise argparse.ArgumentTypeError(f"not a connection count: {text!r}") from None
    if value < 100:
        raise argparse.ArgumentTypeError(f"too few connections to measure: {value}")
    if value > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"more connections than a table holds (2**30): {value:,}")
    return value


def parse_repeats(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least one timed round is needed, not {value}")
    return value


def check_output(parser: argparse.ArgumentParser, option: str, path: str) -> None:
    """Refuse, before minutes of measuring, an output file that cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        parser.error(f"{option} {path}: is a directory")
    if not os.path.isdir(directory):
        parser.error(f"{option} {path}: no such directory: {directory}")
    if not os.access(directory, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        parser.error(f"{option} {path}: not writable")


def check_plot(parser: argparse.ArgumentParser, path: str) -> None:
    check_output(parser, "--plot", path)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        parser.error("--plot needs matplotlib: pip install 'conntable[bench]'")
    formats = FigureCanvasAgg.get_supported_filetypes()
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in formats:
        parser.error(f"--plot {path}: the file name must end in one of "
                     f"{', '.join('.' + f for f in sorted(formats))}")


def version() -> str:
    import platform

    import conntable

    kind = "compiled table" if conntable.IMPLEMENTATION == "cython" else "pure-Python table"
    return (f"conntable {conntable.__version__} ({kind}) on "
            f"{platform.python_implementation()} {platform.python_version()}")


def build_parser() -> argparse.ArgumentParser:
    from .bench.workloads import ALL

    parser = argparse.ArgumentParser(prog="conntable", description=__doc__.split("\n\n")[1])
    parser.add_argument("--version", action="version", version=version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser(
        "bench", help="benchmark conntable against today's connection registries",
        description="Benchmark conntable against the registries servers use today, side by side "
                    "in one process. Progress (with an estimate of the time left) goes to stderr, "
                    "the tables to stdout. Measured on a shared 2-vCPU VM, with the keys workload: "
                    "--quick about 1 minute, the full run 16 minutes; longer while the VM is busy.")
    bench.add_argument("--quick", action="store_true",
                       help="10k and 100k connections, fewer and shorter rounds (about 1 minute on a 2-vCPU VM)")
    bench.add_argument("--sizes", nargs="+", type=parse_size, metavar="N",
                       help="connection counts (default 10k 100k 1M; --quick: 10k 100k)")
    bench.add_argument("--workloads", nargs="+", choices=list(ALL), metavar="NAME",
                       help=f"run only these workloads ({', '.join(ALL)})")
    bench.add_argument("--repeats", type=parse_repeats, metavar="N",
                       help="timed rounds per case, at least 1 (best is kept; default 5, --quick 3)")
    bench.add_argument("--json", metavar="PATH", help="write the raw results as JSON")
    bench.add_argument("--plot", metavar="PATH",
                       help="draw cost against connections (needs matplotlib; .png, .svg, .pdf, ...)")
    bench.set_defaults(subparser=bench)  # for errors that name the subcommand
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The arguments, every one checked: a run of minutes never ends in a usage error."""
    args = build_parser().parse_args(argv)
    if args.json:
        check_output(args.subparser, "--json", args.json)
    if args.plot:
        check_plot(args.subparser, args.plot)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from .bench import runner

    return runner.main(args)


if __name__ == "__main__":
    sys.exit(main())
