"""One registry with its frontends, started and stopped as a unit.

Used by ``regmgr serve`` and by :mod:`regmgr.testing`. A restart drops
every service, as a real registry restart does, but keeps the ports.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, TypeVar, Union

from ..limits import DEFAULT_LIMITS, Limits
from .db import load_db
from .listen import DEFAULT_KEEPALIVE
from .state import Registry
from .styx import StyxServer
from .tcp import TCPGateway

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
    complete within ``request_timeout`` seconds.
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
    ) -> None:
        if keepalive <= 0 or request_timeout <= 0:
            raise ValueError("keepalive and request_timeout must be positive seconds")
        self.host = host
        self.dbfile = dbfile
        self.limits = limits
        self.keepalive = keepalive
        self.request_timeout = request_timeout
        self._ports = (new_port, find_port, event_port)
        self._styx_port = styx_port
        self.registry = Registry(limits)
        self._gateway: Optional[TCPGateway] = None
        self._styx: Optional[StyxServer] = None

    @property
    def running(self) -> bool:
        return self._gateway is not None

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
        """Load the database into a fresh registry and listen; OSError if a port is taken."""
        if self._gateway is not None:
            raise RuntimeError("registry already running")
        self.registry = Registry(self.limits)
        if self.dbfile is not None:
            count = load_db(self.registry, self.dbfile)
            log.info("loaded %d static services from %s", count, os.fspath(self.dbfile))
        gateway = TCPGateway(self.registry, self.host, *self._ports, keepalive=self.keepalive,
                             name_timeout=self.request_timeout, find_timeout=self.request_timeout)
        gateway.start()
        if self._styx_port is not None:
            styx = StyxServer(self.registry, self.host, self._styx_port, keepalive=self.keepalive)
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

    def stop(self) -> None:
        """Close every port and connection; registrations over TCP are gone."""
        if self._styx is not None:
            self._styx.stop()
            self._styx = None
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
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
