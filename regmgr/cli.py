"""The ``regmgr`` command line.

Each subcommand is one function taking the parsed arguments and returning
the exit status; :func:`build_parser` wires them up.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Optional, Sequence

import gevent
from gevent.event import Event

from .errors import RegmgrError

__all__ = ["main", "build_parser"]

log = logging.getLogger("regmgr")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _wait_for_signal() -> None:
    """Block the calling greenlet until SIGINT or SIGTERM arrives."""
    stopping = Event()
    handlers = [gevent.signal_handler(sig, stopping.set) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        stopping.wait()
    finally:
        for handler in handlers:
            handler.cancel()


def cmd_serve(args: argparse.Namespace) -> int:
    """Run an embedded registry in the foreground until SIGINT/SIGTERM."""
    from .server import EmbeddedRegistry

    _setup_logging(args.verbose)
    server = EmbeddedRegistry(
        args.host, new_port=args.new_port, find_port=args.find_port,
        event_port=args.event_port, dbfile=args.dbfile, styx_port=args.styx_port,
    )
    try:
        server.start()
    except (OSError, RegmgrError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        print(f"regmgr serve: {reason}", file=sys.stderr)
        return 1
    try:
        _wait_for_signal()
    finally:
        server.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regmgr", description="Inferno registry(4) client and embedded server.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run an embedded registry in the foreground",
                                description="Run an embedded registry (three-port TCP gateway, "
                                            "optionally Styx).")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    serve.add_argument("--new-port", type=int, default=6701, metavar="PORT",
                       help="registration port (default %(default)s; 0 picks one)")
    serve.add_argument("--find-port", type=int, default=6702, metavar="PORT",
                       help="find port (default %(default)s; 0 picks one)")
    serve.add_argument("--event-port", type=int, default=6703, metavar="PORT",
                       help="event port (default %(default)s; 0 picks one)")
    serve.add_argument("--styx-port", type=int, metavar="PORT",
                       help="also serve over Styx on PORT (Inferno's is 6675; 0 picks one)")
    serve.add_argument("-f", dest="dbfile", metavar="DBFILE",
                       help="attrdb file of persistent services to load at start")
    serve.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
