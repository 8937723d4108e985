"""The ``regmgr`` command line.

Each subcommand is one function taking the parsed arguments and returning
the exit status; :func:`build_parser` wires them up.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import TYPE_CHECKING, Callable, NoReturn, Optional, Sequence, Union

import gevent
from gevent.event import Event

from .errors import TRANSIENT_ERRORS, RegmgrError
from .wire import format_service

if TYPE_CHECKING:
    from . import RegMgr
    from .connections import Connection
    from .tasks import Monitor

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
    from .limits import Limits
    from .server import EmbeddedRegistry
    from .server.listen import raise_nofile_limit

    _setup_logging(args.verbose)
    try:
        limits = Limits(name_bytes=args.max_name_bytes, value_bytes=args.max_value_bytes,
                        attrs=args.max_attrs, service_bytes=args.max_service_bytes)
        server = EmbeddedRegistry(
            args.host, new_port=args.new_port, find_port=args.find_port,
            event_port=args.event_port, dbfile=args.dbfile, styx_port=args.styx_port,
            limits=limits, keepalive=args.keepalive, request_timeout=args.request_timeout,
            store=args.store, session_timeout=args.session_timeout,
        )
    except ValueError as err:
        print(f"regmgr serve: {err}", file=sys.stderr)
        return 2
    descriptors = raise_nofile_limit()
    if descriptors is not None:
        logging.getLogger("regmgr.server").info("descriptor limit %d", descriptors)
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


def _pairs(words: Sequence[str]) -> dict[str, str]:
    if len(words) % 2:
        raise SystemExit(f"regmgr: odd attribute/value pairs: {' '.join(words)}")
    return dict(zip(words[0::2], words[1::2]))


def _port(text: str) -> int:
    """A port number, refused by argparse (one line, exit 2) if out of range."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 0-65535")
    return port


def _address(args: argparse.Namespace, port: str) -> str:
    """``host:port`` of the registry port that ``args`` name."""
    number = args.styx_port if args.transport == "styx" else getattr(args, port)
    return f"{args.host}:{number}"


def _refused(err: BaseException) -> bool:
    cause: Optional[BaseException] = err
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return True
        cause = cause.__cause__
    return False


def _failure(prefix: str, err: BaseException, address: str) -> str:
    """One line for a failed operation; a refused connection says what to do."""
    if _refused(err):
        return (f"{prefix}: no registry at {address} (connection refused): "
                f"start one with 'regmgr serve', or name yours with --host and the port options")
    return f"{prefix}: {err}"


def _hint_if_unreachable(mgr: RegMgr, command: str, address: str) -> None:
    """Say once what to do if the registry is still unreachable after a second."""
    if not mgr.wait_connected(1.0):
        print(f"regmgr {command}: no registry at {address} yet, retrying: start one with "
              f"'regmgr serve', or name yours with --host and the port options",
              file=sys.stderr, flush=True)


def _connection(args: argparse.Namespace) -> Connection:
    """The transport the client options name."""
    from .connections import TCP, Styx

    hosts = [host for host in args.host.split(",") if host]  # several: failover, in turn
    host: Union[str, list[str]] = hosts[0] if len(hosts) == 1 else hosts
    if args.transport == "styx":
        return Styx(host, args.styx_port, user=args.user)
    return TCP(host, new_port=args.new_port, find_port=args.find_port,
               event_port=args.event_port)


def cmd_register(args: argparse.Namespace) -> int:
    """Keep one service registered until SIGINT/SIGTERM, through every outage."""
    from . import RegMgr, Service

    _setup_logging(args.verbose)
    try:
        service = Service(args.name, _pairs(args.attrs))
    except ValueError as err:
        print(f"regmgr register: {err}", file=sys.stderr)
        return 2
    with RegMgr(_connection(args)) as mgr:
        mgr.attach(service)
        gevent.spawn(_hint_if_unreachable, mgr, "register", _address(args, "event_port"))
        _wait_for_signal()
    return 0


def cmd_find(args: argparse.Namespace) -> int:
    """Print the matching services once, like Inferno's regquery."""
    try:
        found = _connection(args).find(_pairs(args.attrs))
    except TRANSIENT_ERRORS as err:
        print(_failure("regmgr find", err, _address(args, "find_port")), file=sys.stderr)
        return 1
    for name, attrs in found.items():
        sys.stdout.write(f"{name}\n" if args.names else format_service(name, attrs))
    return 0


def cmd_unregister(args: argparse.Namespace) -> int:
    """Remove a service over Styx (Tremove): the only way to drop a ``persist`` one."""
    from .connections import Styx

    try:
        Styx(args.host, args.styx_port, user=args.user).remove(args.name)
    except TRANSIENT_ERRORS as err:
        print(_failure(f"regmgr unregister: {args.name}", err, _address(args, "styx_port")),
              file=sys.stderr)
        return 1
    return 0


def _print_change(mark: str) -> Callable[[str, dict[str, str]], None]:
    def show(name: str, attrs: dict[str, str]) -> None:
        sys.stdout.write(f"{mark} {format_service(name, attrs)}")
        sys.stdout.flush()
    return show


def _watcher(attrs: dict[str, str], settle: float,
             on_stale: Callable[[bool], None]) -> Monitor:
    from . import Monitor

    return Monitor(attrs, on_add=_print_change("+"), on_mod=_print_change("~"),
                   on_del=_print_change("-"), settle=settle, on_stale=on_stale)


def cmd_watch(args: argparse.Namespace) -> int:
    """Print ``+``/``~``/``-`` lines as matching services come, change and go."""
    from . import RegMgr

    _setup_logging(args.verbose)
    with RegMgr(_connection(args)) as mgr:
        mgr.attach(_watcher(_pairs(args.attrs), args.settle, lambda stale: log.info(
            "view %s", "stale until reconnected" if stale else "current")))
        gevent.spawn(_hint_if_unreachable, mgr, "watch", _address(args, "event_port"))
        _wait_for_signal()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Show regmgr at work: register, watch, lose the registry, get everything back."""
    import time

    from . import TCP, RegMgr, Service
    from .server import EmbeddedRegistry

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR, stream=sys.stderr)

    def say(text: str) -> None:
        print(f"# {text}", flush=True)

    def until(condition: Callable[[], bool]) -> None:
        while not condition():
            gevent.sleep(0.01)

    server = EmbeddedRegistry(new_port=0, find_port=0, event_port=0)
    server.start()
    conn = TCP(server.host, new_port=server.new_port, find_port=server.find_port,
               event_port=server.event_port)
    say(f"registry on {server.host}, ports new {server.new_port}, find {server.find_port}, "
        f"event {server.event_port}")
    try:
        with gevent.Timeout(10), RegMgr(conn) as owner, RegMgr(conn) as watcher:
            monitor = watcher.attach(_watcher({"proto": "*"}, 2.0, lambda stale: say(
                "the view is stale (not connected)" if stale else "the view is current")))
            say("registering three services, watching proto=*")
            web = owner.attach(Service("tcp!127.0.0.1!8080", {"proto": "http", "load": "0.1"}))
            owner.attach(Service("tcp!127.0.0.1!8081", {"proto": "http", "load": "0.5"}))
            ssh = owner.attach(Service("tcp!127.0.0.1!2222", {"proto": "ssh"}))
            until(lambda: len(monitor.services) == 3)
            say("updating one service's load")
            web.update({"load": "0.7"})
            until(lambda: monitor.services[web.name]["load"] == "0.7")
            say("the registry restarts: it comes back empty")
            server.restart()
            restarted = time.monotonic()
            until(lambda: len(server.registry) == 3 and not monitor.stale
                  and monitor.services == conn.find({"proto": "*"}))
            say(f"every service is back {time.monotonic() - restarted:.2f} s later, "
                f"with no false deletion:")
            for name, attrs in conn.find().items():
                say(f"  {format_service(name, attrs).rstrip()}")
            say("unregistering the ssh service")
            owner.detach(ssh)
            until(lambda: ssh.name not in monitor.services)
    except gevent.Timeout:
        print("regmgr demo: did not finish within 10 s", file=sys.stderr)
        return 1
    finally:
        server.stop()
    say("done")
    return 0


def _add_client_options(parser: argparse.ArgumentParser, *, tcp: bool = True) -> None:
    """The connection options; ``tcp=False`` for a Styx-only command.

    A Styx-only command still takes ``--transport styx``, so the same
    options work for every command.
    """
    parser.add_argument("--host", default="127.0.0.1",
                        help="registry host, or several comma-separated (frontends of one "
                             "replicated registry, tried in turn) (default %(default)s)")
    if not tcp:
        parser.add_argument("--transport", choices=("styx",), default="styx",
                            help="only Styx can remove a service (default %(default)s)")
    else:
        parser.add_argument("--transport", choices=("tcp", "styx"), default="tcp",
                            help="the three-port TCP gateway, or Styx as Inferno exports "
                                 "the registry (default %(default)s)")
        parser.add_argument("--new-port", type=_port, default=6701, metavar="PORT",
                            help="registration port (default %(default)s)")
        parser.add_argument("--find-port", type=_port, default=6702, metavar="PORT",
                            help="find port (default %(default)s)")
        parser.add_argument("--event-port", type=_port, default=6703, metavar="PORT",
                            help="event port (default %(default)s)")
    parser.add_argument("--styx-port", type=_port, default=6675, metavar="PORT",
                        help="Styx port (default %(default)s)")
    parser.add_argument("--user", default="none",
                        help="Styx user name: it owns what it registers, and only it may "
                             "unregister that (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


class _Version(argparse.Action):
    """``--version``: looks the installed version up only when asked, so that
    the other commands (``serve`` above all) start without importlib.metadata."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS,
                 help: str = "show program's version number and exit") -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: Optional[str] = None) -> NoReturn:
        from . import __version__

        print(f"{parser.prog} {__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from .limits import Limits
    from .server.listen import DEFAULT_KEEPALIVE

    parser = _Parser(
        prog="regmgr", description="Inferno registry(4) client and embedded server.")
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run an embedded registry in the foreground",
                                description="Run an embedded registry (three-port TCP gateway, "
                                            "optionally Styx).")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    serve.add_argument("--new-port", type=_port, default=6701, metavar="PORT",
                       help="registration port (default %(default)s; 0 picks one)")
    serve.add_argument("--find-port", type=_port, default=6702, metavar="PORT",
                       help="find port (default %(default)s; 0 picks one)")
    serve.add_argument("--event-port", type=_port, default=6703, metavar="PORT",
                       help="event port (default %(default)s; 0 picks one)")
    serve.add_argument("--styx-port", type=_port, metavar="PORT",
                       help="also serve over Styx on PORT (Inferno's is 6675; 0 picks one)")
    serve.add_argument("--store", metavar="URL",
                       help="where the registry lives: memory: (default, this process) or "
                            "zookeeper://HOST:PORT[,HOST:PORT...][/ROOT] (one registry over "
                            "several frontends; needs regmgr[zookeeper])")
    serve.add_argument("--session-timeout", type=float, default=5.0, metavar="SECONDS",
                       help="ZooKeeper session timeout: how long the registrations of a "
                            "frontend that died stay listed (default %(default)s)")
    serve.add_argument("-f", dest="dbfile", metavar="DBFILE",
                       help="attrdb file of persistent services to load at start")
    limits = Limits()
    serve.add_argument("--max-attrs", type=int, default=limits.attrs, metavar="N",
                       help="attributes per service (default %(default)s)")
    serve.add_argument("--max-value-bytes", type=int, default=limits.value_bytes, metavar="BYTES",
                       help="bytes of one attribute value (default %(default)s)")
    serve.add_argument("--max-name-bytes", type=int, default=limits.name_bytes, metavar="BYTES",
                       help="bytes of a service name (default %(default)s)")
    serve.add_argument("--max-service-bytes", type=int, default=limits.service_bytes,
                       metavar="BYTES", help="bytes of a whole service line (default %(default)s)")
    serve.add_argument("--keepalive", type=float, default=DEFAULT_KEEPALIVE, metavar="SECONDS",
                       help="drop a client that vanished (no FIN) within about SECONDS "
                            "(default %(default)s)")
    serve.add_argument("--request-timeout", type=float, default=5.0, metavar="SECONDS",
                       help="a new connection must name its service, a find send its filter, "
                            "a Styx connection its Tversion, within SECONDS (default %(default)s)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    serve.set_defaults(func=cmd_serve)

    register = commands.add_parser(
        "register", help="keep a service registered until Ctrl-C",
        description="Register NAME with its attributes and keep it registered through "
                    "registry restarts and outages until SIGINT/SIGTERM.")
    register.add_argument("name", metavar="NAME")
    register.add_argument("attrs", nargs="*", metavar="ATTR VALUE")
    _add_client_options(register)
    register.set_defaults(func=cmd_register)

    find = commands.add_parser(
        "find", help="print the matching services (like regquery)",
        description="Print the services whose attributes match every ATTR VALUE pair "
                    "(VALUE * matches any value), one per line in index format.")
    find.add_argument("-n", dest="names", action="store_true", help="print names only")
    find.add_argument("attrs", nargs="*", metavar="ATTR VALUE")
    _add_client_options(find)
    find.set_defaults(func=cmd_find)

    unregister = commands.add_parser(
        "unregister", help="remove a service, persistent or not (Styx only)",
        description="Remove service NAME over Styx. Only its owner (--user) may; this is "
                    "the only way to remove a service registered with 'persist 1'.")
    unregister.add_argument("name", metavar="NAME")
    _add_client_options(unregister, tcp=False)
    unregister.set_defaults(func=cmd_unregister)

    watch = commands.add_parser(
        "watch", help="print matching services as they come, change and go",
        description="Print '+ name attrs', '~ name attrs' and '- name attrs' lines as matching "
                    "services are added, modified and deleted, until SIGINT/SIGTERM.")
    watch.add_argument("attrs", nargs="*", metavar="ATTR VALUE")
    watch.add_argument("--settle", type=float, default=2.0, metavar="SECONDS",
                       help="after a reconnect, report a missing service deleted only if still "
                            "missing this long (default %(default)s; 0 reports at once)")
    _add_client_options(watch)
    watch.set_defaults(func=cmd_watch)

    demo = commands.add_parser(
        "demo", help="watch regmgr restore everything after a registry restart",
        description="Start an embedded registry, register and watch a few services, restart "
                    "the registry, show everything coming back, and exit.")
    demo.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; every failure is one line on stderr and a non-zero status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug: one line, the traceback only with -v
        if getattr(args, "verbose", False):
            raise
        print(f"regmgr {args.command}: {type(err).__name__}: {err} (-v shows where)", file=sys.stderr)
        return 1
