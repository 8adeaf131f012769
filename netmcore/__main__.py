"""The ``netmcore`` command line: ``python -m netmcore --help``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``low``."""

    def parse(text: str) -> int:
        value = int(text)  # argparse reports a ValueError as an invalid value
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: give at least {low}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value"
    return parse


def _bench(args: argparse.Namespace) -> int:
    from . import _bench

    _bench.main(
        roundtrips=args.roundtrips,
        fanout=args.fanout,
        payload_mib=args.payload_mib,
        sections=args.section,
        tasks=args.tasks,
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    import msgspec

    from . import _admin
    from ._errors import SocketDirectoryError

    try:
        socket_dir = args.socket_dir or _admin.the_running_master()
        status = _admin.status(socket_dir)
    except SocketDirectoryError as exc:
        print(f"netmcore status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        body = {
            "socket_directory": os.path.abspath(socket_dir),
            "master_pid": status.master_pid,
            "processes": status.processes,
            "resources": status.resources,
        }
        print(msgspec.json.format(msgspec.json.encode(body).decode()))
        return 0
    print(f"master pid {status.master_pid}, socket directory {os.path.abspath(socket_dir)}")
    print(f"\nprocesses ({len(status.processes)}):")
    print(f"  {'id':>6} {'os pid':>8}  {'state':<10} {'running':>10}  type")
    for p in status.processes:
        print(f"  {p.id:>6} {p.os_pid:>8}  {p.state:<10} {p.seconds:>9.1f}s  {p.type}")
        for what in p.waits:
            print(f"  {'':>6} {'':>8}  waits for {what}")
    print(f"\nresources ({len(status.resources)}):")
    print(f"  {'id':>6}  {'kind':<24} {'users':<16} name")
    for r in status.resources:
        users = ",".join("master" if u == -1 else str(u) for u in r.users) or "-"
        print(f"  {r.id:>6}  {r.kind:<24} {users:<16} {r.name}")
    return 0


def _kill(args: argparse.Namespace) -> int:
    import signal

    from . import _admin
    from ._errors import SocketDirectoryError

    try:
        signum = _signal_number(args.signal)
    except ValueError as exc:
        print(f"netmcore kill: {exc}", file=sys.stderr)
        return 2
    name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
    failed = 0
    for n in args.ids:
        try:
            delivered = _admin.kill(args.socket_dir, n, signum)
        except SocketDirectoryError as exc:
            print(f"netmcore kill: process {n}: {exc}", file=sys.stderr)
            failed = 1
            continue
        print(f"process {n}: sent {name}" if delivered else f"process {n}: it had ended already")
    return failed


def _signal_number(text: str) -> int:
    """The number of the signal ``text`` ("TERM", "SIGTERM", "sigkill", "15")."""
    import signal

    if text.isdigit():
        return int(text)
    name = text.upper() if text.upper().startswith("SIG") else f"SIG{text.upper()}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(
            f"{text!r} is not a signal: pass a name, like TERM, KILL or INT, or a number"
        ) from None


def _unlink(args: argparse.Namespace) -> int:
    from . import _admin
    from ._errors import SocketDirectoryError

    try:
        removed = _admin.unlink(args.socket_dir)
    except SocketDirectoryError as exc:
        print(f"netmcore unlink: {exc}", file=sys.stderr)
        return 1
    if not removed:
        print(f"nothing to remove in {args.socket_dir}")
    for name in removed:
        print(f"removed {name}")
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import _schemas

    try:
        contracts = _schemas.collect(args.modules)
        out = Path(args.out)
        if args.check:
            report = _schemas.drift(contracts, out, exact=args.exact)
            if report:
                sys.stdout.writelines(report)
                exact = " --exact" if args.exact else ""
                print(
                    f"\nnetmcore schemas: {out} has drifted from the code; regenerate it with "
                    f"`netmcore schemas {' '.join(args.modules)} --out {out}{exact}`",
                    file=sys.stderr,
                )
                return 1
            print(f"{out}: {len(contracts.files)} contract(s) up to date")
            return 0
        for line in _schemas.write(contracts, out, exact=args.exact):
            print(line)
    except _schemas.SchemasError as exc:
        print(f"netmcore schemas: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netmcore", description="Tools for netmcore, multi-core compute jobs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser(
        "bench",
        help="compare netmcore with the standard library and its peers, side by side",
        description="Measure netmcore against multiprocessing, ProcessPoolExecutor and raw "
        "fork, and against loky, Dask and Ray where installed, in one run, and print a table "
        "of ratios (lower is better).",
    )
    bench.add_argument(
        "--roundtrips",
        type=_at_least(4),  # peers that fork per call get half, and a p90 needs two
        default=500,
        metavar="N",
        help="start->join round trips to time (default: %(default)s)",
    )
    bench.add_argument(
        "--fanout",
        type=_at_least(1),
        default=1000,
        metavar="N",
        help="processes one worker starts, then joins (default: %(default)s)",
    )
    bench.add_argument(
        "--payload-mib",
        type=_at_least(1),
        default=64,
        metavar="MIB",
        help="size of the large argument and result (default: %(default)s)",
    )
    bench.add_argument(
        "--tasks",
        type=_at_least(1),
        default=1000,
        metavar="N",
        help="trivial tasks in the map that netmcore and its peers run (default: %(default)s)",
    )
    bench.add_argument(
        "--section",
        choices=("all", "runtime", "ipc", "pipeline", "peers"),
        default="all",
        help="which measures to run (default: %(default)s)",
    )
    bench.set_defaults(func=_bench)

    status = sub.add_parser(
        "status",
        help="show a running master's processes and resources",
        description="Ask the master running in SOCKET_DIR for its processes (library id, "
        "OS pid, type, state, time running, what it waits for in the master: a join, "
        "a plugin call) and resources (id, kind, name, users). Without SOCKET_DIR: your "
        "one master running in a directory of its own (a run given no socket_directory), "
        "or the list of them to choose from.",
    )
    status.add_argument(
        "socket_dir",
        metavar="SOCKET_DIR",
        nargs="?",
        help="the master's socket_directory (default: your one running master's own)",
    )
    status.add_argument("--json", action="store_true", help="print the same as JSON")
    status.set_defaults(func=_status)

    kill = sub.add_parser(
        "kill",
        help="have a running master signal some of its processes",
        description="Have the master running in SOCKET_DIR send a signal to each of its "
        "processes ID (the library ids `netmcore status` lists), as netmcore.kill does: "
        "through the process's pidfd, never by OS pid. Says, for each, whether it got it "
        "or had ended already.",
    )
    kill.add_argument("socket_dir", metavar="SOCKET_DIR", help="the master's socket_directory")
    kill.add_argument("ids", nargs="+", type=int, metavar="ID", help="the processes to signal")
    kill.add_argument(
        "--signal",
        "-s",
        default="KILL",
        metavar="SIG",
        help="a signal name (TERM, INT, ...) or number (default: %(default)s)",
    )
    kill.set_defaults(func=_kill)

    unlink = sub.add_parser(
        "unlink",
        help="remove what a dead master left in its socket directory",
        description="Unlink every kernel object that a dead master's crash-cleanup record "
        "in SOCKET_DIR still lists, and its stale socket and lock file. Refuses while a "
        "master is alive there.",
    )
    unlink.add_argument(
        "socket_dir", metavar="SOCKET_DIR", help="the dead master's socket_directory"
    )
    unlink.set_defaults(func=_unlink)

    schemas = sub.add_parser(
        "schemas",
        help="write the JSON Schemas of process types, or check them for drift",
        description="Import MODULEs (dotted names or .py paths) and write one JSON file per "
        "ProcessDef and EncapType defined in them (at module level or in a class), named "
        "MODULE.QUALNAME.json: qualified name, input and output schemas, fingerprint. A run "
        "concerns the given MODULEs only: it removes their files whose process type or "
        "EncapType no longer exists, and leaves other modules' files in DIR alone, so that "
        "several runs can share DIR. With --exact, DIR holds the given MODULEs' contracts and "
        "no others: contracts of any other module are removed too (with --check, reported).",
    )
    schemas.add_argument("modules", nargs="+", metavar="MODULE", help="modules to scan")
    schemas.add_argument(
        "--out", default="schemas", metavar="DIR", help="where the files go (default: %(default)s)"
    )
    schemas.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if the MODULEs' files in DIR have drifted "
        "(a contract missing, changed, or no longer in the code)",
    )
    schemas.add_argument(
        "--exact",
        action="store_true",
        help="DIR is the MODULEs' alone: also remove (with --check, report) the contracts of "
        "modules not given, such as one deleted since",
    )
    schemas.set_defaults(func=_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
