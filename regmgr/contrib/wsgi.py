"""Advertise a WSGI server in the registry for exactly as long as it listens.

The service is registered once the server's socket is bound, and
unregistered the moment shutdown begins, before requests in flight are
drained, so peers stop dialing an address that is about to refuse them.
Its name defaults to the listening address in Inferno dial form,
``tcp!HOST!PORT``; its attributes are the caller's.

``gevent.pywsgi`` (or any gevent server)::

    mgr = RegMgr(TCP("127.0.0.1"))
    serve_registered(WSGIServer(("10.0.0.5", 8080), app), mgr, {"proto": "http"})

gunicorn, in its config file::

    registration = GunicornHooks(TCP("127.0.0.1"), {"proto": "http"})
    when_ready = registration.when_ready
    on_exit = registration.on_exit

gunicorn registers from its arbiter, not from its workers: the address is
the arbiter's listening socket, shared by every worker, so workers
registering it would collide (``duplicate service name``: only one can
hold it) and the entry would vanish whenever that one worker is recycled.
The arbiter cannot run regmgr itself: it does not run gevent's loop, and a
registry socket it opened would be inherited by every worker it forks, so
closing it would not unregister. :meth:`GunicornHooks.when_ready` therefore
starts a small keeper process (``python -m regmgr.contrib.wsgi``) that
holds the registration; it leaves as soon as the arbiter is told to stop
(SIGTERM, SIGINT, SIGQUIT), and by itself if the arbiter dies.
"""
from __future__ import annotations

import functools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Optional

import gevent
from gevent.baseserver import BaseServer
from gevent.event import Event

from ..connections import Connection
from ..manager import RegMgr
from ..tasks import Service
from ..wire import AttrValue, normalize_attrs, service_name_error

__all__ = ["dial_address", "serve_registered", "GunicornHooks"]

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
#: How often the keeper checks that gunicorn's arbiter is still its parent (seconds).
ORPHAN_CHECK = 0.25
#: How long ``on_exit`` waits for the keeper before killing it (seconds).
KEEPER_EXIT_TIMEOUT = 5.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def dial_address(address: object) -> str:
    """``tcp!HOST!PORT`` for a socket address ``(host, port, ...)``.

    A wildcard host (``0.0.0.0``, ``::``) becomes this machine's host name:
    peers cannot dial a wildcard.
    """
    if not (isinstance(address, tuple) and len(address) >= 2):
        raise ValueError(f"not a TCP address: {address!r}")
    host, port = address[0], address[1]
    if host in _WILDCARD_HOSTS:
        host = socket.gethostname()
    return f"tcp!{host}!{port}"


def _check_name(name: str) -> str:
    error = service_name_error(name)
    if error is not None:
        raise ValueError(f"{error}: {name!r}")
    return name


@contextmanager
def _stop_event(signals: Sequence[int]) -> Iterator[Event]:
    """An event that any of ``signals`` sets, instead of their usual effect."""
    stopping = Event()
    handlers = [gevent.signal_handler(signum, stopping.set) for signum in signals]
    try:
        yield stopping
    finally:
        for handler in handlers:
            handler.cancel()


def serve_registered(
    server: BaseServer,
    manager: RegMgr,
    attrs: Optional[Mapping[str, AttrValue]] = None,
    *,
    name: Optional[str] = None,
    stop_signals: Sequence[int] = _STOP_SIGNALS,
    stop_timeout: Optional[float] = None,
) -> None:
    """Run ``server``, registered through ``manager``, until a stop signal.

    Starts the server first, so its address is known even when it was
    asked for port 0, then attaches a :class:`~regmgr.Service` named
    ``name`` (default :func:`dial_address` of the server). On one of
    ``stop_signals`` it unregisters, then stops the server, giving requests
    in flight ``stop_timeout`` seconds (None: the server's own default).
    """
    server.start()
    try:
        service = manager.attach(Service(name if name is not None else dial_address(server.address),
                                         attrs))
        try:
            with _stop_event(stop_signals) as stopping:
                stopping.wait()
        finally:
            if service.manager is manager:
                manager.detach(service)
    finally:
        server.stop(timeout=stop_timeout)


class GunicornHooks:
    """gunicorn server hooks that keep gunicorn's address registered while it runs.

    In a gunicorn config file: ``when_ready = hooks.when_ready`` and
    ``on_exit = hooks.on_exit``. Registers one service per TCP listener
    (``--bind``), named by :func:`dial_address`, or the single ``name``
    given. ``connection`` is handed to the keeper process by pickling
    (``TCP`` and ``Styx`` pickle their configuration), so one that cannot
    be pickled is refused here, in the config file, with ``TypeError``.
    """

    def __init__(
        self,
        connection: Connection,
        attrs: Optional[Mapping[str, AttrValue]] = None,
        *,
        name: Optional[str] = None,
    ) -> None:
        try:
            pickle.dumps(connection)
        except Exception as err:
            raise TypeError(f"GunicornHooks hands the connection to its keeper process by "
                            f"pickling, and {connection!r} cannot be pickled: {err}") from err
        self.connection = connection
        self.attrs = normalize_attrs(attrs)
        self.name = None if name is None else _check_name(name)
        #: The keeper process while gunicorn runs.
        self.keeper: Optional[subprocess.Popen[bytes]] = None
        self._arbiter_pid = 0

    def when_ready(self, arbiter: Any) -> None:
        """gunicorn hook, in the arbiter once it listens: start the keeper.

        Also wraps the arbiter's stop-signal handlers so that the keeper is
        told first: gunicorn calls ``on_exit`` only after its workers have
        drained, and peers should stop dialing before that.
        """
        if self.name is not None:
            names = [self.name]
        else:
            names = [_check_name(dial_address(listener.getsockname()))
                     for listener in arbiter.LISTENERS
                     if listener.family in (socket.AF_INET, socket.AF_INET6)]
        if not names:
            arbiter.log.warning("regmgr: no TCP listener, nothing to register")
            return
        self._arbiter_pid = os.getpid()
        keeper = subprocess.Popen([sys.executable, "-m", "regmgr.contrib.wsgi"],
                                  stdin=subprocess.PIPE)
        assert keeper.stdin is not None
        with keeper.stdin:
            keeper.stdin.write(pickle.dumps((self.connection, names, self.attrs, self._arbiter_pid)))
        self.keeper = keeper
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            previous = signal.getsignal(signum)
            if callable(previous):
                signal.signal(signum, functools.partial(self._on_stop_signal, previous))
        arbiter.log.info("regmgr: keeper (pid: %s) registers %s", keeper.pid, " ".join(names))

    def _on_stop_signal(self, previous: Callable[[int, Optional[FrameType]], Any],
                        signum: int, frame: Optional[FrameType]) -> None:
        # A worker runs this only if signalled before it set its own handlers.
        if self.keeper is not None and os.getpid() == self._arbiter_pid:
            self.keeper.send_signal(signal.SIGTERM)
        previous(signum, frame)

    def on_exit(self, arbiter: Any) -> None:
        """gunicorn hook, in the arbiter as it exits: make sure the keeper is gone."""
        keeper, self.keeper = self.keeper, None
        if keeper is None:
            return
        keeper.send_signal(signal.SIGTERM)
        try:
            keeper.wait(KEEPER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            arbiter.log.warning("regmgr: keeper (pid: %s) did not stop; killing it", keeper.pid)
            keeper.kill()
            keeper.wait()


def _keep() -> None:
    """The keeper process: hold the registrations until told to stop or orphaned."""
    try:
        connection, names, attrs, parent = pickle.load(sys.stdin.buffer)
    except EOFError:
        sys.exit("python -m regmgr.contrib.wsgi is started by GunicornHooks.when_ready, not by hand")
    logging.basicConfig(level=logging.INFO,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] regmgr: %(message)s")
    with _stop_event(_STOP_SIGNALS) as stopping, RegMgr(connection) as manager:
        for name in names:
            manager.attach(Service(name, attrs))
        while not stopping.wait(ORPHAN_CHECK) and os.getppid() == parent:
            pass


if __name__ == "__main__":
    _keep()
