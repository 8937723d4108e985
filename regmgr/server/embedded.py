"""One registry with its frontends, started and stopped as a unit.

Used by ``regmgr serve`` and by :mod:`regmgr.testing`. A restart drops
every service, as a real registry restart does, but keeps the ports.

With ``store="zookeeper://..."`` the registry is one of several frontends
over a ZooKeeper ensemble (:mod:`.zookeeper`). When that store loses its
session, this registry's ephemeral services are gone, so it closes its
ports and every connection, as a dying registry does (clients reconnect
elsewhere and register again); it listens again, on the same ports, once
it has a new session.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Optional, TypeVar, Union

from ..limits import DEFAULT_LIMITS, Limits
from .db import load_db
from .listen import DEFAULT_KEEPALIVE
from .store import ManagedStore, MemoryStore, open_store
from .tcp import TCPGateway

if TYPE_CHECKING:
    from .styx import StyxServer

log = logging.getLogger("regmgr.server")

__all__ = ["EmbeddedRegistry"]

_Self = TypeVar("_Self", bound="EmbeddedRegistry")


class EmbeddedRegistry:
    """A registry served on the three TCP gateway ports (0 = ephemeral).

    With ``styx_port`` (0 = ephemeral) it is also served over Styx, the way a
    remote Inferno machine or regmgr's Styx transport reaches a registry.
    ``limits`` bound every service (both frontends refuse a write over them);
    a client that vanished is dropped within about ``keepalive`` seconds; a
    gateway request (naming a service, sending a find's filter) must be
    complete within ``request_timeout`` seconds. ``store`` is a
    :func:`~.store.open_store` URL (default: memory); ``session_timeout`` the
    ZooKeeper session's.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        new_port: int = 6701,
        find_port: int = 6702,
        event_port: int = 6703,
        dbfile: Optional[Union[str, os.PathLike]] = None,
        styx_port: Optional[int] = None,
        limits: Limits = DEFAULT_LIMITS,
        keepalive: float = DEFAULT_KEEPALIVE,
        request_timeout: float = 5.0,
        store: Optional[str] = None,
        session_timeout: float = 5.0,
    ) -> None:
        if keepalive < 2 or request_timeout <= 0:
            raise ValueError("keepalive must be at least 2 seconds, request_timeout positive")
        self.host = host
        self.dbfile = dbfile
        self.limits = limits
        self.keepalive = keepalive
        self.request_timeout = request_timeout
        self._ports = (new_port, find_port, event_port)
        self._styx_port = styx_port
        self.store = store
        self.session_timeout = session_timeout
        self.registry: ManagedStore = MemoryStore(limits)
        self._running = False
        self._gateway: Optional[TCPGateway] = None
        self._styx: Optional[StyxServer] = None

    @property
    def running(self) -> bool:
        return self._running

    @property
    def new_port(self) -> int:
        return self._ports[0]

    @property
    def find_port(self) -> int:
        return self._ports[1]

    @property
    def event_port(self) -> int:
        return self._ports[2]

    @property
    def styx_port(self) -> Optional[int]:
        """The Styx port, or None when Styx is not served."""
        return self._styx.port if self._styx else self._styx_port

    def start(self) -> None:
        """Open the store, load the database, listen; OSError if a port is taken,
        :class:`~.store.StoreError` if the store cannot be reached."""
        if self._running:
            raise RuntimeError("registry already running")
        store = open_store(self.store, limits=self.limits, session_timeout=self.session_timeout)
        store.start()
        try:
            if self.dbfile is not None:
                count = load_db(store, self.dbfile)
                log.info("loaded %d static services from %s", count, os.fspath(self.dbfile))
            self.registry = store
            self._listen()
        except BaseException:
            store.close()
            raise
        store.add_serving_listener(self._serving)
        self._running = True

    def _listen(self) -> None:
        gateway = TCPGateway(self.registry, self.host, *self._ports, keepalive=self.keepalive,
                             name_timeout=self.request_timeout, find_timeout=self.request_timeout)
        gateway.start()
        if self._styx_port is not None:
            # Imported here: the Styx codec is loaded only if Styx is served, and
            # only once the gateway ports already take connections.
            from .styx import StyxServer

            styx = StyxServer(self.registry, self.host, self._styx_port, keepalive=self.keepalive,
                              version_timeout=self.request_timeout)
            try:
                styx.start()
            except BaseException:
                gateway.stop()
                raise
            self._styx = styx
            self._styx_port = styx.port
        self._gateway = gateway
        # Remember the bound ports so that a restart comes back on the same ones.
        self._ports = (gateway.new_port, gateway.find_port, gateway.event_port)
        styx_note = "" if self._styx is None else f", styx {self._styx.port}"
        log.info("registry listening on %s: new %d, find %d, event %d%s",
                 self.host, self.new_port, self.find_port, self.event_port, styx_note)

    def _close_ports(self) -> None:
        if self._styx is not None:
            self._styx.stop()
            self._styx = None
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None

    def _serving(self, serving: bool) -> None:
        """The store's session went (close everything) or came back (listen again)."""
        if not self._running:
            return
        if not serving:
            log.warning("registry store lost: closing every port and connection")
            self._close_ports()
        elif self._gateway is None:
            try:
                self._listen()
            except OSError as err:
                log.error("registry store back, but cannot listen again: %s", err)

    def stop(self) -> None:
        """Close every port and connection; registrations over TCP are gone."""
        if not self._running:
            return
        self._running = False
        self.registry.remove_serving_listener(self._serving)
        self._close_ports()
        self.registry.close()
        log.info("registry stopped")

    def restart(self) -> None:
        """Stop, then start empty (plus the database) on the same ports."""
        self.stop()
        self.start()

    def __enter__(self: _Self) -> _Self:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
