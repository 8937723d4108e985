"""How a client notices a registry that died, hung or vanished from the network.

Two mechanisms, one bound. With ``probe_interval`` *i* and
``probe_timeout`` *t* (options of :class:`~regmgr.connections.TCP` and
:class:`~regmgr.connections.Styx`), a registry that stops answering is
noticed within about *i* + *t* seconds (8 s by default):

* :func:`keepalive` sets, on every lasting client socket (not a TCP find's, whose
  request and reply have deadlines), kernel keepalive probes
  every *i* seconds of silence and a ``TCP_USER_TIMEOUT`` of *t*: a peer
  that vanished without a FIN (a partition, a host that went away) kills
  the socket, even one the gateway never writes to (a registration);
* an application-level probe every *i* seconds must be answered within *t*
  (TCP: a find on the find port; Styx: a Tstat of the root on the session):
  only that notices a registry process that hangs while its kernel keeps
  acknowledging (SIGSTOP, a deadlock). A failed probe ends the event stream
  (and, over Styx, the whole session), so the manager disconnects, its
  tasks stop, monitors go stale, and everything is restored on reconnect.
"""
from __future__ import annotations

import math
import socket
import struct
from collections.abc import Callable

import gevent

from ..sockopt import tcp_keepalive

__all__ = ["keepalive", "abort", "check_probe_options", "deadline", "PROBE_INTERVAL",
           "PROBE_TIMEOUT"]

#: Default seconds between two probes of an idle registry.
PROBE_INTERVAL = 3.0
#: Default seconds a probe may wait for its answer.
PROBE_TIMEOUT = 5.0


def check_probe_options(interval: float, timeout: float) -> None:
    """Refuse probe settings that cannot work, before any I/O."""
    if not interval > 0 or not timeout > 0:
        raise ValueError(f"probe_interval and probe_timeout must be > 0, "
                         f"not {interval!r} and {timeout!r}")


def keepalive(sock: socket.socket, interval: float, timeout: float) -> None:
    """Make the kernel drop ``sock`` if its peer is silent for about ``interval + timeout`` s.

    Keepalive probes start after ``interval`` idle seconds and repeat every
    ``interval`` seconds until ``timeout`` passed; data left unacknowledged
    for as long also ends the connection (``TCP_USER_TIMEOUT``, Linux).
    Options the platform lacks are skipped.

    The user timeout must cover the whole probe schedule: Linux counts it
    from the last data *received*, and a registration socket never receives
    any, so a shorter one killed idle registrations whose probes were being
    answered (835 of 10,000 lost at once in one process).
    """
    seconds = max(1, math.ceil(interval))
    count = max(1, math.ceil(timeout / seconds))
    tcp_keepalive(sock, idle=seconds, interval=seconds, count=count,
                  user_timeout=seconds * (1 + count))


def abort(sock: socket.socket) -> None:
    """Close ``sock`` with a reset: for a connection given up for dead.

    A plain close leaves the kernel an orphan that retransmits its FIN into
    a partition for a while; if the partition heals meanwhile, the orphan
    acknowledges the registry's keepalive probe, so the registry keeps the
    connection (and its registrations, which block our new ones with
    ``duplicate service name``) for another keepalive round. With no
    orphan, its first probe after the heal meets a reset instead.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already closed
    sock.close()


def deadline(seconds: float, what: str, call: Callable[[], object]) -> None:
    """Run ``call()``; ``ConnectionError`` if it takes more than ``seconds``."""
    timer = gevent.Timeout(seconds)
    timer.start()
    try:
        call()
    except gevent.Timeout as err:
        if err is not timer:
            raise
        raise ConnectionError(f"{what}: no answer in {seconds} s") from None
    finally:
        timer.close()
