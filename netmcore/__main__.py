"""The ``netmcore`` command line: ``python -m netmcore --help``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def _bench(args: argparse.Namespace) -> int:
    from . import _bench

    _bench.main(roundtrips=args.roundtrips, fanout=args.fanout, payload_mib=args.payload_mib)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netmcore", description="Tools for netmcore, multi-core compute jobs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser(
        "bench",
        help="compare netmcore with the standard library, side by side",
        description="Measure netmcore against multiprocessing, ProcessPoolExecutor and raw "
        "fork in one run, and print a table of ratios (lower is better).",
    )
    bench.add_argument(
        "--roundtrips",
        type=int,
        default=500,
        metavar="N",
        help="start->join round trips to time (default: %(default)s)",
    )
    bench.add_argument(
        "--fanout",
        type=int,
        default=1000,
        metavar="N",
        help="processes one worker starts, then joins (default: %(default)s)",
    )
    bench.add_argument(
        "--payload-mib",
        type=int,
        default=64,
        metavar="MIB",
        help="size of the large argument and result (default: %(default)s)",
    )
    bench.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
