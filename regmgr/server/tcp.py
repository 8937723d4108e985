"""The three-port plain-TCP gateway (registry4.md §6) over a :class:`~.store.Store`.

Inferno reaches its registry through three ``listen`` pipelines; this module
serves the same three ports from gevent:

* **new** — the first line names a service, later lines update it; the
  connection is the registration, and any refused write closes it. Lines
  that arrive together are one write, as in Inferno, where each TCP read
  is copied to the service file; a partial line waits for its newline.
* **find** — one line (the filter) in, the matching services out, closed.
* **event** — ``READY\\n``, then one ``NNNNNNNN\\n`` per coalesced change.

Nothing a client sends can crash the server or stall other clients: sizes
are capped (:mod:`regmgr.limits`, checked by the model on every write, and
``new_limit`` bytes per message), every request has a deadline as a whole
(a new connection must name its service within ``name_timeout`` seconds, a
find must send its filter within ``find_timeout`` and take its reply within
as long again), an event client that does not read holds at most one
pending line (the next is computed when the previous one is sent), and
undecodable bytes become U+FFFD as Limbo's ``string`` conversion makes them.
"""
from __future__ import annotations

import getpass
import itertools
import logging
import os
import select
import time
from typing import Optional

import gevent
from gevent.event import Event
from gevent.socket import socket as GeventSocket

from ..errors import RegistryError
from .listen import DEFAULT_KEEPALIVE, Listener, peer_text
from .state import parse_filter
from .store import Store

log = logging.getLogger("regmgr.server")

__all__ = ["TCPGateway", "READY"]

READY = b"READY\n"
_CHUNK = 65536
#: Connections that have not made their request, closed per descriptor shortage.
_SHED = 64
#: Most waits of a find for registrations already on their way in (the new
#: port has a connection to accept, an unnamed connection has bytes to read).
#: Counted in hub rounds, not seconds: on a loaded machine a round may take
#: long, and the registration needs a few of them (accept, start, read).
_SETTLE_ROUNDS = 10
#: Longest a find waits for a new connection younger than _FRESH to name its
#: service: it was most likely opened together with the find.
_GRACE = 0.002
_FRESH = 0.1
#: One wait: a timer, so the hub polls I/O (gevent.sleep(0) may not).
_TICK = 0.0005
#: Only the youngest unnamed connections are looked at (idle ones are old).
_YOUNGEST = 64


class _Deadline(Exception):
    """A request was not complete in time."""


def _recv_by(sock: GeventSocket, deadline: float) -> bytes:
    """One recv that fails with :class:`_Deadline` once ``deadline`` (monotonic) passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Deadline()
    sock.settimeout(left)
    try:
        return sock.recv(_CHUNK)
    except TimeoutError:  # socket.timeout
        raise _Deadline() from None


class TCPGateway:
    """Serve ``registry`` on three TCP ports (0 picks an ephemeral port).

    ``owner`` is the user every TCP registration belongs to: as in Inferno,
    where the listeners run as the user who started the registry.
    """

    def __init__(
        self,
        registry: Store,
        host: str = "127.0.0.1",
        new_port: int = 6701,
        find_port: int = 6702,
        event_port: int = 6703,
        *,
        new_limit: int = 64 * 1024,
        find_limit: int = 8 * 1024,
        find_timeout: float = 5.0,
        name_timeout: float = 5.0,
        keepalive: float = DEFAULT_KEEPALIVE,
        owner: Optional[str] = None,
    ) -> None:
        self.registry = registry
        self.host = host
        self.new_limit = new_limit
        self.find_limit = find_limit
        self.find_timeout = find_timeout
        self.name_timeout = name_timeout
        self.owner = owner if owner is not None else getpass.getuser()
        self._servers = {
            port: Listener((host, number), handler, name=port, keepalive=alive, shed=self._shed)
            for port, number, handler, alive in (
                ("new", new_port, self._serve_new, keepalive),
                # A find is over within 2 * find_timeout whatever the peer does.
                ("find", find_port, self._serve_find, None),
                ("event", event_port, self._serve_event, keepalive))
        }
        self._clients: set[GeventSocket] = set()
        # Connections that hold a descriptor but have not made their request, oldest first.
        self._waiting: dict[GeventSocket, None] = {}
        self._unnamed: dict[GeventSocket, float] = {}  # new-port connections not yet named -> accepted

    @property
    def new_port(self) -> int:
        return self._servers["new"].server_port

    @property
    def find_port(self) -> int:
        return self._servers["find"].server_port

    @property
    def event_port(self) -> int:
        return self._servers["event"].server_port

    def start(self) -> None:
        """Bind and listen on all three ports; ``OSError`` if one is taken."""
        started = []
        try:
            for name, server in self._servers.items():
                try:
                    server.start()
                except OSError as err:
                    host, port = server.address[:2]
                    reason = os.strerror(err.errno) if err.errno else str(err)
                    raise OSError(err.errno, f"cannot listen on {host}:{port} ({name} port): "
                                             f"{reason}") from err
                started.append(server)
        except BaseException:
            for server in started:
                server.stop()
            raise

    def stop(self) -> None:
        """Close the listeners and every client connection, as a dying registry does."""
        for server in self._servers.values():
            server.close()
        for sock in list(self._clients):
            sock.close()
        for server in self._servers.values():
            server.stop(timeout=1)

    def _shed(self) -> None:
        """Out of descriptors: close the oldest connections still waiting for a request."""
        for sock in list(self._waiting)[:_SHED]:
            self._waiting.pop(sock, None)
            sock.close()

    # -- new -----------------------------------------------------------------

    def _serve_new(self, sock: GeventSocket, address: object) -> None:
        peer = peer_text(address)
        svc = self.registry.create(self.owner)
        self._clients.add(sock)
        self._waiting[sock] = None
        self._unnamed[sock] = time.monotonic()
        deadline = time.monotonic() + self.name_timeout
        buffer = b""
        try:
            while True:
                if svc.name is None:
                    data = _recv_by(sock, deadline)
                else:
                    sock.settimeout(None)
                    data = sock.recv(_CHUNK)
                if data:
                    buffer += data
                    end = buffer.rfind(b"\n") + 1
                elif buffer:
                    end = len(buffer)  # what is left at EOF is one last write
                else:
                    break
                if end > self.new_limit or len(buffer) - end > self.new_limit:
                    log.warning("new %s: message over %d bytes, closing", peer, self.new_limit)
                    break
                if end:
                    message, buffer = buffer[:end], buffer[end:]
                    named = svc.name is not None
                    try:
                        self.registry.write(svc, message.decode("utf-8", "replace"))
                    except RegistryError as err:
                        log.info("new %s: %s, closing", peer, err)
                        break
                    if not named and svc.name is not None:
                        self._waiting.pop(sock, None)
                        self._unnamed.pop(sock, None)
                        log.info("new %s: registered %r", peer, svc.name)
                if not data:
                    break
        except _Deadline:
            log.debug("new %s: no service named within %g s, closing", peer, self.name_timeout)
        except OSError as err:
            log.debug("new %s: %s", peer, err)
        finally:
            self._waiting.pop(sock, None)
            self._unnamed.pop(sock, None)
            self._clients.discard(sock)
            sock.close()
            name = svc.name
            self.registry.release(svc)
            if name is not None:
                log.info("new %s: connection closed, %r %s", peer, name,
                         "kept (persist)" if not svc.removed else "unregistered")

    # -- find ----------------------------------------------------------------

    def _serve_find(self, sock: GeventSocket, address: object) -> None:
        peer = peer_text(address)
        self._clients.add(sock)
        self._waiting[sock] = None
        deadline = time.monotonic() + self.find_timeout
        buffer = b""
        try:
            # Read up to the first newline or EOF, but never past the limit.
            while b"\n" not in buffer and len(buffer) <= self.find_limit:
                data = _recv_by(sock, deadline)
                if not data:
                    break
                buffer += data
            self._waiting.pop(sock, None)
            buffer = buffer[:buffer.find(b"\n") + 1 or len(buffer)]
            if len(buffer) > self.find_limit:
                log.warning("find %s: filter over %d bytes, closing", peer, self.find_limit)
                return
            try:
                pairs = parse_filter(buffer.decode("utf-8", "replace"))
            except RegistryError as err:
                log.info("find %s: %s, closing", peer, err)
                return
            self._settle()
            reply = self.registry.find(pairs).encode("utf-8")
            sock.settimeout(self.find_timeout)  # the whole reply: sendall's timeout is overall
            sock.sendall(reply)
        except _Deadline:
            log.debug("find %s: no filter within %g s, closing", peer, self.find_timeout)
        except OSError as err:  # includes socket.timeout
            log.info("find %s: %s, closing", peer, err or type(err).__name__)
        finally:
            self._waiting.pop(sock, None)
            self._clients.discard(sock)
            sock.close()

    def _settle(self) -> None:
        """Let registrations that already reached the server be applied first.

        A real registry's find takes milliseconds, so a registration sent on
        another connection at the same moment as a find is practically
        always in its answer (registry4.md §9), and clients rely on it. Here
        the find could overtake it: so it waits (up to ``_SETTLE_ROUNDS``
        hub rounds) while the new port has a connection to accept or an
        unnamed connection has bytes to read, and (up to ``_GRACE``) for a
        just-opened new connection to send its name. Otherwise it costs one
        ``poll``.
        """
        started = time.monotonic()
        rounds = 0
        while True:
            now = time.monotonic()
            if self._registrations_pending():
                rounds += 1
                if rounds > _SETTLE_ROUNDS:
                    return
            elif now - started >= _GRACE or not any(now - self._unnamed[sock] < _FRESH
                                                    for sock in self._youngest()):
                return
            gevent.sleep(_TICK)

    def _registrations_pending(self) -> bool:
        if self._servers["new"].starting:
            return True
        poller = select.poll()
        listener = getattr(self._servers["new"], "socket", None)  # gone once stopped
        if listener is not None:
            poller.register(listener.fileno(), select.POLLIN)
        for sock in self._youngest():
            poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def _youngest(self) -> list[GeventSocket]:
        return list(itertools.islice(reversed(self._unnamed), _YOUNGEST))

    # -- event ---------------------------------------------------------------

    def _serve_event(self, sock: GeventSocket, address: object) -> None:
        peer = peer_text(address)
        watcher = self.registry.watch()
        changed = Event()
        gone = Event()

        def listener(version: int) -> None:
            changed.set()

        def drain() -> None:
            """Ignore whatever the client sends; notice when it hangs up."""
            try:
                while sock.recv(_CHUNK):
                    pass
            except OSError:
                pass
            gone.set()
            changed.set()

        self._clients.add(sock)
        self.registry.subscribe(listener)
        reader = gevent.spawn(drain)
        try:
            sock.sendall(READY)
            while not gone.is_set():
                version = watcher.poll()
                if version is None:
                    changed.wait()
                    changed.clear()
                    continue
                sock.sendall(b"%08d\n" % version)
        except OSError as err:
            log.debug("event %s: %s", peer, err)
        finally:
            self.registry.unsubscribe(listener)
            self._clients.discard(sock)
            reader.kill(block=False)
            sock.close()
