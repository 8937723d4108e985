"""The registry tree served over Styx (9P2000): the socket loop.

A real registry is reached over the network through ``listen -A
'tcp!*!registry' {export /mnt/registry &}`` (registry4.md §7); this frontend
serves the same tree from gevent so that an Inferno machine can ``mount`` it
and regmgr's Styx client can use it. What each request does (fids, qids,
modes, error texts, flush) is :mod:`.styxproto`'s, which has no I/O; this
module only moves bytes:

* Each connection is one :class:`~.styxproto.StyxSession`. When the
  connection drops, every fid is clunked, so its non-persistent services
  disappear.
* One greenlet per connection reads and answers requests in order; replies
  go through a per-connection outbox so that an event read, which may be
  answered later from another connection's write, never blocks the session
  and never interleaves a half-written frame. Bytes that are not 9P2000
  close that connection only.
"""
from __future__ import annotations

import logging
import time
from collections import deque

import gevent
from gevent.event import Event
from gevent.socket import socket as GeventSocket

from .. import ninep
from .listen import DEFAULT_KEEPALIVE, Listener, peer_text
from .store import Store
from .styxproto import (  # noqa: F401  (qid constants re-exported for tests)
    MAX_IOUNIT, MAX_MSIZE, QEVENT, QFIND, QINDEX, QNEW, QROOT, QSVC, Listings, StyxSession,
)

log = logging.getLogger("regmgr.server")

__all__ = ["StyxServer", "MAX_MSIZE", "MAX_IOUNIT"]

#: Reply bytes queued for a client before its session stops reading requests.
_BACKLOG = 1 << 20
#: Connections without a Tversion closed per descriptor shortage.
_SHED = 64


class _Outbox:
    """Frames for one client, written in order by their own greenlet (those
    queued together in one send)."""

    def __init__(self, sock: GeventSocket) -> None:
        self._sock = sock
        self._frames: deque[bytes] = deque()
        self._queued = 0
        self._ready = Event()
        self._room = Event()
        self._room.set()
        self.closed = False
        self._writer = gevent.spawn(self._run)

    def put(self, frame: bytes) -> None:
        if self.closed:
            return
        self._frames.append(frame)
        self._queued += len(frame)
        if self._queued > _BACKLOG:
            self._room.clear()
        self._ready.set()

    def wait_for_room(self) -> None:
        """Block while the client is not reading its replies."""
        self._room.wait()

    def _run(self) -> None:
        try:
            while True:
                self._ready.wait()
                self._ready.clear()
                while self._frames:
                    # Every frame queued meanwhile in one send: a client with
                    # many requests in flight gets its replies in few segments.
                    frames = list(self._frames)
                    self._frames.clear()
                    data = frames[0] if len(frames) == 1 else b"".join(frames)
                    self._queued -= len(data)
                    self._sock.sendall(data)
                    if self._queued <= _BACKLOG:
                        self._room.set()
        except OSError as err:
            log.debug("styx: write failed: %s", err)
        finally:
            self.close()
            self._sock.close()  # wakes the reader

    def close(self) -> None:
        """Drop what is queued and stop; never blocks."""
        self.closed = True
        self._frames.clear()
        self._room.set()
        if self._writer is not gevent.getcurrent():
            self._writer.kill(block=False)


class _Connection:
    """One Styx connection: bytes in, the session's replies out."""

    def __init__(self, frontend: StyxServer, sock: GeventSocket, peer: str) -> None:
        self.registry = frontend.registry
        self.peer = peer
        self.sock = sock
        self.decoder = ninep.Decoder(MAX_MSIZE)
        self.session = StyxSession(frontend.registry, frontend.started, frontend.listings)
        self.outbox = _Outbox(sock)
        self.frontend = frontend

    def run(self) -> None:
        """Serve requests until the client hangs up or breaks the protocol.

        Until a Tversion succeeds the connection holds a descriptor for
        nothing: it must get there within the frontend's ``version_timeout``.
        """
        self.registry.subscribe(self._changed)
        deadline = time.monotonic() + self.frontend.version_timeout
        try:
            while True:
                if not self.session.msize:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        log.debug("styx %s: no Tversion in time, closing", self.peer)
                        break
                    self.sock.settimeout(left)
                else:
                    self.frontend.waiting.pop(self.sock, None)
                    self.sock.settimeout(None)
                data = self.sock.recv(65536)
                if not data:
                    break
                self.decoder.feed(data)
                while (msg := self.decoder.next_message()) is not None:
                    self._put(self.session.handle(msg))
                    if self.session.msize:
                        self.decoder.msize = self.session.msize
                    self.outbox.wait_for_room()
        except ninep.NinepError as err:
            log.info("styx %s: %s, closing", self.peer, err)
        except OSError as err:
            log.debug("styx %s: %s", self.peer, err)
        finally:
            self.registry.unsubscribe(self._changed)
            self.session.close()
            self.outbox.close()
            self.sock.close()

    def _changed(self, version: int) -> None:
        """Registry listener: send the answers to this session's blocked event reads."""
        self._put(self.session.changed())

    def _put(self, replies: list[ninep.RMessage]) -> None:
        for reply in replies:
            self.outbox.put(self.session.encode(reply))


class StyxServer:
    """Serve ``registry`` over Styx on one TCP port (0 picks an ephemeral port)."""

    def __init__(self, registry: Store, host: str = "127.0.0.1", port: int = 6675, *,
                 keepalive: float = DEFAULT_KEEPALIVE, version_timeout: float = 5.0) -> None:
        """``version_timeout``: seconds a new connection has to send a valid Tversion."""
        self.registry = registry
        self.host = host
        self.started = int(time.time())
        self.version_timeout = version_timeout
        self.listings = Listings(registry)  # snapshots shared by every session
        # Replies are small frames: no Nagle delay.
        self._server = Listener((host, port), self._serve, name="styx", keepalive=keepalive,
                                nodelay=True, shed=self._shed)
        self._clients: set[GeventSocket] = set()
        #: Connections without a Tversion yet, oldest first: shed when descriptors run out.
        self.waiting: dict[GeventSocket, None] = {}

    @property
    def port(self) -> int:
        port: int = self._server.server_port
        return port

    def start(self) -> None:
        """Bind and listen; ``OSError`` if the port is taken."""
        try:
            self._server.start()
        except OSError as err:
            raise OSError(err.errno, f"cannot listen on {self.host}:{self._server.address[1]} "
                                     f"(styx port): {err.strerror or err}") from err

    def stop(self) -> None:
        """Close the listener and every connection, as a dying registry does."""
        self._server.close()
        for sock in list(self._clients):
            sock.close()
        self._server.stop(timeout=1)

    def _shed(self) -> None:
        """Out of descriptors: close the oldest connections that sent no Tversion yet."""
        for sock in list(self.waiting)[:_SHED]:
            self.waiting.pop(sock, None)
            sock.close()

    def _serve(self, sock: GeventSocket, address: object) -> None:
        peer = peer_text(address)
        self._clients.add(sock)
        self.waiting[sock] = None
        log.debug("styx %s: connected", peer)
        try:
            _Connection(self, sock, peer).run()
        finally:
            self.waiting.pop(sock, None)
            self._clients.discard(sock)
            log.debug("styx %s: closed", peer)
