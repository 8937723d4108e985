"""What every listening port of the server does alike: accept, probe, survive EMFILE.

* Every accepted socket of a port whose connections last (``new``,
  ``event``, Styx) gets TCP keepalive and ``TCP_USER_TIMEOUT`` tuned
  so that a client that vanished without a FIN (a partition, a host that
  rebooted) is noticed within ``keepalive`` seconds and its connection,
  with its registrations, torn down (registry4.md §9: nothing is ever
  written to a ``new`` connection, so only the kernel's probes can tell).
* Running out of descriptors on ``accept`` logs one warning (not a
  traceback per attempt), lets the owner shed connections that hold a
  descriptor without having sent their request yet, and retries shortly,
  while established clients are served as before.
* :func:`raise_nofile_limit` lifts the soft descriptor limit to the hard one.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Optional

import gevent
from gevent.server import StreamServer
from gevent.socket import socket as GeventSocket

from ..sockopt import tcp_keepalive

log = logging.getLogger("regmgr.server")

__all__ = ["DEFAULT_KEEPALIVE", "Listener", "peer_text", "raise_nofile_limit", "set_keepalive"]

#: Seconds within which a silent dead peer is noticed, by default.
DEFAULT_KEEPALIVE = 25.0
#: Connections each port lets wait for accept() (the kernel may cap it:
#: net.core.somaxconn). After a restart every client re-registers all its
#: services at once, a connection each: with gevent's default of 128, a
#: thousand of them overflowed it and the kernel's dropped handshakes were
#: retried a second later.
BACKLOG = 1024
#: Linux refuses TCP_KEEPCNT over 127.
_MAX_PROBES = 127
#: Pause before accepting again after running out of descriptors.
_EMFILE_RETRY = 0.05


def peer_text(address: object) -> str:
    """``host:port`` of a peer address, for log lines."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def set_keepalive(sock: socket.socket, seconds: float) -> None:
    """Make the kernel give up on a silent peer after about ``seconds``.

    Idle for 40% of it, then a probe every second over the rest; and
    ``TCP_USER_TIMEOUT`` for data that stays unacknowledged as long (a
    peer that vanished while a reply was in flight). Probing every second
    (not three probes spread out) matters after a partition heals: the
    first probe that reaches a client which gave up on this connection
    meets a reset, so its stale registrations go within a second, before
    monitors that reconnected give up waiting for their owners.
    """
    idle = max(1, int(seconds * 0.4))
    count = max(1, min(_MAX_PROBES, int(seconds - idle)))
    interval = max(1, int((seconds - idle) // count))  # 1 unless over _MAX_PROBES seconds
    tcp_keepalive(sock, idle=idle, interval=interval, count=count, user_timeout=seconds)


def raise_nofile_limit() -> Optional[int]:
    """Raise the soft descriptor limit to the hard one; the new soft limit (None: unknown)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as err:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, err)
    return None if soft == resource.RLIM_INFINITY else soft


#: Seconds between two warnings that descriptors ran out.
_WARN_EVERY = 300.0


class _Exhaustion:
    """Process-wide: when we last said that descriptors ran out."""

    warned = -_WARN_EVERY
    shed = 0  # connections shed since


class Listener(StreamServer):
    """A StreamServer that sets keepalive on each connection and survives EMFILE.

    ``keepalive=None`` sets none: for a port whose every request has a
    deadline of its own (``find``), five system calls per connection saved.

    ``shed`` is called when accept runs out of descriptors: it should close
    some connections that have not made their request yet.
    """

    def __init__(self, address: tuple[str, int], handle: Callable[[GeventSocket, Any], None], *,
                 name: str, keepalive: Optional[float] = DEFAULT_KEEPALIVE,
                 nodelay: bool = False, shed: Optional[Callable[[], None]] = None) -> None:
        super().__init__(address, self._accepted, backlog=BACKLOG)
        self.name = name
        self.keepalive = keepalive
        self.nodelay = nodelay
        self._handle_connection = handle
        self._shed = shed
        #: Connections accepted whose handler has not started yet.
        self.starting = 0

    def do_read(self) -> Any:
        try:
            result = super().do_read()
        except OSError as err:
            if err.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            self._exhausted(err)
            return None
        if result:
            self.starting += 1
        return result

    def _exhausted(self, err: OSError) -> None:
        now = time.monotonic()
        if now - _Exhaustion.warned >= _WARN_EVERY:
            _Exhaustion.warned = now
            log.warning("out of descriptors (%s) on the %s port: new connections wait, "
                        "connections that made no request yet are closed, clients already "
                        "connected are served (said at most every %g s)",
                        os.strerror(err.errno or 0), self.name, _WARN_EVERY)
        if self._shed is not None:
            self._shed()
        self.stop_accepting()
        gevent.spawn_later(_EMFILE_RETRY, self._resume)

    def _resume(self) -> None:
        if self.started:
            self.start_accepting()

    def _accepted(self, sock: GeventSocket, address: Any) -> None:
        self.starting -= 1
        try:
            if self.keepalive is not None:
                set_keepalive(sock, self.keepalive)
            if self.nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as err:  # the peer is already gone
            log.debug("%s %s: %s", self.name, peer_text(address), err)
            sock.close()
            return
        self._handle_connection(sock, address)
