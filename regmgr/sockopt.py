"""TCP keepalive options on a socket: the one place both ends set them.

Client connections (:mod:`regmgr.connections.liveness`) and the server's
accepted sockets (:mod:`regmgr.server.listen`) each decide their timings;
this only applies them, skipping options the platform lacks.
"""
from __future__ import annotations

import socket

__all__ = ["tcp_keepalive"]


def tcp_keepalive(sock: socket.socket, *, idle: int, interval: int, count: int,
                  user_timeout: float) -> None:
    """Probe after ``idle`` silent seconds, every ``interval`` s, ``count`` times;
    give up on data unacknowledged for ``user_timeout`` seconds (Linux)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval),
                          ("TCP_KEEPCNT", count),
                          ("TCP_USER_TIMEOUT", max(1, int(user_timeout * 1000)))):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
