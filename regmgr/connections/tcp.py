"""The three-port plain-TCP gateway transport (registry4.md §6).

One TCP connection per registration (the gateway's own rule: the
connection *is* the registration), one per find, one for the event stream.

The gateway never acknowledges a registration; a refused one only shows as
the server closing the connection. So :meth:`TCP.open_new` confirms, and
confirms only an entry that is *this connection's*: a listing that shows
the name proves nothing by itself, since an older entry of the same name
(a previous connection's, not yet dropped) looks just the same, and the
wire has no room for a marker of ours. What does tell is the order of
things at the registry: it applies a registration line before it answers a
find that reached it later (registry4.md §9; ``regmgr serve`` guarantees
it), and refusing that line means closing our connection first. So after
sending the line, :meth:`TCP.open_new` runs finds until the name is listed
with exactly our attributes by two finds in a row, the second started
after the first was answered, and our connection is still open after the
second: a refusal's FIN was sent before the first answer and has had a
whole round trip to arrive. A closed connection is a refusal (a find of
everything then tells a ``duplicate service name`` from a registry that
went away). Registrations confirmed at the same time share those finds
(:class:`~.shared.SharedListing`).

The gateway cannot take back a ``persist`` entry that outlived its
connection (there is no way to reopen it): the registration is refused
with ``duplicate service name`` until the entry is removed (over Styx by
its owner, or by a registry restart); a :class:`~regmgr.Service` retries
with backoff and logs each refusal.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Optional, Union

import gevent
import gevent.socket
from gevent.event import Event

from ..errors import TRANSIENT_ERRORS, ProtocolError, RegistryError
from ..limits import check_service
from ..listing import ListingParser
from ..wire import format_attrs, format_service, parse_services, service_name_error
from .liveness import (PROBE_INTERVAL, PROBE_TIMEOUT, abort, check_probe_options, deadline,
                       keepalive)
from .shared import SharedListing

__all__ = ["TCP", "TCPEventStream", "TCPRegistration", "FIND_LIMIT"]

#: Largest find reply accepted, as the Perl client caps it.
FIND_LIMIT = 1 << 20
_EVENT_LINE_LIMIT = 1024
_CONFIRM_FILTER = 1024  # characters of the filter that confirms a registration
_GATHER = 0.05  # seconds a confirming find may wait for registration lines on their way
_FORGET = 1.0  # seconds without a registration to confirm before its last listing is dropped
_VERSION = re.compile(rb"\d+")
#: The filter of a probe: it matches no service a client of regmgr registers.
PROBE_FILTER = {"regmgr.probe": "none"}


@contextmanager
def _link(what: str) -> Iterator[None]:
    """Turn any socket failure (timeouts included) into ``ConnectionError``."""
    try:
        yield
    except OSError as err:
        raise ConnectionError(f"{what}: {err or type(err).__name__}") from err


def _address_family(host: str) -> Optional[int]:
    """``AF_INET``/``AF_INET6`` if ``host`` is a numeric address; None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _peer_closed(sock: gevent.socket.socket) -> bool:
    """Whether the peer has closed ``sock``, without blocking or consuming data."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


def _filter_of(attrs: Mapping[str, str]) -> dict[str, str]:
    """The first pairs of ``attrs`` that fit :data:`_CONFIRM_FILTER` bytes: enough to narrow a find.

    The whole of a large service would be over the gateway's find limit.
    """
    chosen: dict[str, str] = {}
    size = 0
    for key, value in attrs.items():
        size += len(key) + len(value) + 2
        if size > _CONFIRM_FILTER:
            break
        chosen[key] = value
    return chosen


class _Link:
    """Whether the event stream of one connection to the registry was lost.

    Registrations made while it stood are closed with a reset once it is
    lost (see :func:`.liveness.abort`), gracefully otherwise.
    """

    __slots__ = ("lost",)

    def __init__(self) -> None:
        self.lost = False


class TCPEventStream:
    """The event port after ``READY``: one version line per coalesced change.

    After :meth:`start_probes`, a greenlet calls ``probe`` every ``interval``
    seconds and then sends a newline on the event connection (the gateway
    ignores what a client sends there, but a registry host that forgot the
    connection answers with a reset); when either fails, :meth:`wait` raises.
    """

    def __init__(self, sock: gevent.socket.socket, label: str, link: Optional[_Link] = None
                 ) -> None:
        self._sock = sock
        self._label = label
        self._link = link if link is not None else _Link()
        self._buffer = b""
        self._failure: Optional[ConnectionError] = None
        self._prober: Optional[gevent.Greenlet] = None

    def start_probes(self, probe: Callable[[], None], interval: float) -> None:
        self._prober = gevent.spawn(self._probe, probe, interval)

    def _probe(self, probe: Callable[[], None], interval: float) -> None:
        while True:
            gevent.sleep(interval)
            try:
                probe()
                with _link(self._label):
                    self._sock.sendall(b"\n")
            except TRANSIENT_ERRORS as err:
                self._failure = ConnectionError(f"{self._label}: probe failed: {err}")
                self._link.lost = True
                abort(self._sock)  # wakes wait()
                return

    def _readline(self) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) >= _EVENT_LINE_LIMIT:
                raise ProtocolError(f"{self._label}: event line too long", self._buffer)
            with _link(self._label):
                data = self._sock.recv(_EVENT_LINE_LIMIT)
            if not data:
                raise ConnectionError(f"{self._label}: closed by the registry")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def wait(self) -> int:
        try:
            line = self._readline()
        except (ConnectionError, ProtocolError):
            self._link.lost = True
            if self._failure is not None:
                raise self._failure from None
            raise
        if not _VERSION.fullmatch(line):
            raise ProtocolError(f"{self._label}: bad event line", line)
        return int(line)

    def close(self) -> None:
        if self._prober is not None:
            self._prober.kill(block=False)
        if self._link.lost:
            abort(self._sock)
        else:
            self._sock.close()


class TCPRegistration:
    """One registered service: the open connection to the new port."""

    def __init__(self, sock: gevent.socket.socket, name: str, label: str, link: _Link) -> None:
        self.name = name
        self._sock = sock
        self._label = label
        self._link = link
        self._closed = False
        self._notify: Optional[Callable[[Optional[Exception]], object]] = None
        self._watcher: Any = None  # the hub's io watcher while notify() waits

    def update(self, attrs: Mapping[str, str]) -> None:
        if not attrs:
            return  # an empty write is `bad syntax`: it would unregister us
        check_service(None, attrs)  # the tasks checked; this is the last line of defence
        if self._closed:
            raise ConnectionError(f"{self._label}: registration closed")
        with _link(self._label):
            self._sock.sendall((format_attrs(attrs) + "\n").encode("utf-8"))

    def wait(self) -> None:
        try:
            while self._sock.recv(1024):
                pass  # the gateway never sends anything here
        except OSError as err:
            if self._closed:
                return
            raise ConnectionError(f"{self._label}: {err}") from err
        if not self._closed:
            raise ConnectionError(f"{self._label}: closed by the registry")

    def notify(self, callback: Callable[[Optional[Exception]], object]) -> None:
        loop = gevent.get_hub().loop
        self._notify = callback
        if self._closed:
            loop.run_callback(self._end, None)
            return
        self._watcher = loop.io(self._sock.fileno(), 1)  # readable: data, EOF or an error
        self._watcher.start(self._readable)

    def _readable(self) -> None:
        """The socket is readable (in the hub): the gateway closed it, or it broke."""
        timeout = self._sock.gettimeout()
        self._sock.settimeout(0.0)  # never switch: this runs in the hub
        try:
            if self._sock.recv(1024):
                return  # the gateway never sends anything here
            error = ConnectionError(f"{self._label}: closed by the registry")
        except BlockingIOError:
            return
        except OSError as err:
            error = ConnectionError(f"{self._label}: {err}")
        finally:
            self._sock.settimeout(timeout)
        self._end(error)

    def _end(self, error: Optional[Exception]) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()
        callback, self._notify = self._notify, None
        if callback is not None:
            callback(error)

    def close(self) -> None:
        if self._notify is not None and not self._closed:
            watcher, self._watcher = self._watcher, None
            if watcher is not None:
                watcher.close()  # before the socket closes
            gevent.get_hub().loop.run_callback(self._end, None)  # from the hub, as promised
        self._closed = True
        if self._link.lost:
            abort(self._sock)  # the registry is gone or unreachable: leave no orphan
        else:
            self._sock.close()

    @property
    def peer_closed(self) -> bool:
        return _peer_closed(self._sock)


def _registries(host: object, ports: tuple[int, int, int]
                ) -> list[tuple[str, int, int, int]]:
    """Every registry a TCP connection may use: ``host`` or a list of hosts
    (the given ports) and ``(host, new_port, find_port, event_port)`` tuples."""
    entries = [host] if isinstance(host, str) else host
    if not isinstance(entries, Sequence) or not entries:
        raise TypeError(f"host must be str or a non-empty list of registries, not {host!r}")
    out: list[tuple[str, int, int, int]] = []
    for entry in entries:
        if isinstance(entry, str):
            out.append((entry, *ports))
        elif (isinstance(entry, tuple) and len(entry) == 4 and isinstance(entry[0], str)
              and all(isinstance(port, int) for port in entry[1:])):
            out.append(entry)
        else:
            raise TypeError(f"a registry is a host str or (host, new_port, find_port, "
                            f"event_port), not {entry!r}")
    return out


class TCP:
    """Reach a registry through the three-port TCP gateway.

    ``connect_timeout`` bounds connecting, the ``READY`` greeting, each
    read of a find reply and the confirmation of a registration.

    While the event stream is open, a find that matches nothing runs every
    ``probe_interval`` seconds and must be answered within
    ``probe_timeout``; every socket also has kernel keepalive with the same
    two settings (:mod:`.liveness`). So a registry that hangs, or a host or
    link that goes silent, is noticed within about ``probe_interval +
    probe_timeout`` seconds (8 s by default): the event stream fails, the
    manager disconnects and reconnects.

    ``host`` may be a list of registries, the frontends of one replicated
    registry (``regmgr serve --store zookeeper://...``): hosts on the given
    ports, or ``(host, new_port, find_port, event_port)`` tuples. Each
    reconnection (each :meth:`open_event` after the first) moves to the next.
    """

    def __init__(
        self,
        host: Union[str, Sequence[Union[str, tuple[str, int, int, int]]]],
        new_port: int = 6701,
        find_port: int = 6702,
        event_port: int = 6703,
        *,
        connect_timeout: float = 5.0,
        probe_interval: float = PROBE_INTERVAL,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        check_probe_options(probe_interval, probe_timeout)
        self.registries = _registries(host, (new_port, find_port, event_port))
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.connect_timeout = connect_timeout
        self._next = 0
        self._opened = False
        self._rotate()
        # A confirming find waits (a little) for the lines on their way: those
        # registrations then share it instead of needing two more finds each.
        self._sending = 0  # registrations connecting or sending their line
        self._all_sent = Event()
        self._all_sent.set()
        self._confirmations = SharedListing(lambda: self._all_sent.wait(_GATHER))
        self._confirmed_listing = ListingParser()  # the confirmations' last find
        self._confirming = 0  # registrations being confirmed
        self._link = _Link()  # the latest event stream's

    def _rotate(self) -> None:
        """Use the next registry of the list (the first on the first call)."""
        self.host, self.new_port, self.find_port, self.event_port = self.registries[self._next]
        self._next = (self._next + 1) % len(self.registries)
        self._family = _address_family(self.host)

    def __getstate__(self) -> dict[str, object]:
        """Only the configuration pickles: a copy shares no finds in flight."""
        host = self.host if len(self.registries) == 1 else self.registries
        return {"host": host, "new_port": self.new_port, "find_port": self.find_port,
                "event_port": self.event_port, "connect_timeout": self.connect_timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        TCP.__init__(self, **state)

    def __repr__(self) -> str:
        if len(self.registries) > 1:
            return f"TCP({self.registries!r})"
        return (f"TCP({self.host!r}, new_port={self.new_port}, "
                f"find_port={self.find_port}, event_port={self.event_port})")

    def _connect(self, port: int, label: str, lasting: bool = True) -> gevent.socket.socket:
        """A connection to ``port``; kernel keepalive on it if it is ``lasting``
        (a find's is not: its request and reply have deadlines)."""
        with _link(label):
            if self._family is None:
                sock = gevent.socket.create_connection((self.host, port),
                                                       timeout=self.connect_timeout)
                if lasting:
                    keepalive(sock, self.probe_interval, self.probe_timeout)
                return sock
            # An address, not a name: skip the resolver, which gevent runs in a
            # thread (half the cost of connecting on loopback).
            sock = gevent.socket.socket(self._family, socket.SOCK_STREAM)
            try:
                if lasting:
                    keepalive(sock, self.probe_interval, self.probe_timeout)
                sock.settimeout(0.0)
                try:  # on loopback the handshake is over when this returns: no wait
                    sock.connect((self.host, port))
                except BlockingIOError:
                    pass
                sock.settimeout(self.connect_timeout)
                sock.connect((self.host, port))  # done, or waits for the handshake
            except BaseException:
                sock.close()
                raise
            return sock

    def open_event(self) -> TCPEventStream:
        """The event stream; each call after the first moves to the next registry
        of the list, and finds and registrations follow it."""
        if self._opened:
            self._rotate()
        self._opened = True
        label = f"event {self.host}:{self.event_port}"
        sock = self._connect(self.event_port, label)
        self._link = link = _Link()
        stream = TCPEventStream(sock, label, link)
        try:
            greeting = stream._readline()
            if greeting != b"READY":
                raise ProtocolError(f"{label}: expected READY", greeting)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        stream.start_probes(self._probe, self.probe_interval)
        return stream

    def _probe(self) -> None:
        """A find that matches nothing, answered within ``probe_timeout`` (or ConnectionError)."""
        deadline(self.probe_timeout, f"probe {self.host}:{self.find_port}",
                 lambda: self._find(PROBE_FILTER))

    def find(self, attrs: Optional[Mapping[str, str]] = None) -> dict[str, dict[str, str]]:
        attrs = attrs or {}
        check_service(None, attrs)
        # The gateway reads the filter up to the first newline, quoted or
        # not: pairs holding one are matched here instead.
        local = {k: v for k, v in attrs.items() if "\n" in k or "\n" in v}
        remote = {k: v for k, v in attrs.items() if k not in local}
        found = parse_services(self._find(remote))
        if not local:
            return found
        return {name: have for name, have in found.items()
                if all(k in have and v in ("*", have[k]) for k, v in local.items())}

    def find_text(self, attrs: Optional[Mapping[str, str]] = None) -> str:
        """:meth:`find`'s listing as the registry sent it (``index`` format)."""
        attrs = attrs or {}
        check_service(None, attrs)
        if any("\n" in k or "\n" in v for k, v in attrs.items()):  # matched here: re-listed
            return "".join(format_service(name, have) for name, have in self.find(attrs).items())
        return self._find(attrs)

    def _find(self, attrs: Mapping[str, str]) -> str:
        label = f"find {self.host}:{self.find_port}"
        request = (format_attrs(attrs) + "\n").encode("utf-8")
        chunks = []
        size = 0
        with self._connect(self.find_port, label, lasting=False) as sock, _link(label):
            sock.sendall(request)  # one send: the real gateway takes one read as the filter
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                size += len(data)
                if size > FIND_LIMIT:
                    raise ProtocolError(f"{label}: reply over {FIND_LIMIT} bytes")
                chunks.append(data)
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ProtocolError(f"{label}: reply is not UTF-8", err.object[:200]) from err

    def open_new(self, name: str, attrs: Optional[Mapping[str, str]] = None) -> TCPRegistration:
        attrs = dict(attrs or {})
        check_service(name, attrs, name_rules=False)  # the tasks checked; the last line of defence
        error = service_name_error(name)
        if error is not None:
            raise RegistryError(error)  # what the registry would say, without the round trip
        label = f"new {self.host}:{self.new_port} {name!r}"
        self._sending += 1
        self._all_sent.clear()
        try:
            sock = self._connect(self.new_port, label)
            registration = TCPRegistration(sock, name, label, self._link)
        except BaseException:
            self._sent()
            raise
        try:
            try:
                with _link(label):
                    sock.sendall(format_service(name, attrs).encode("utf-8"))
            finally:
                self._sent()
            sock.settimeout(None)
            self._confirm(registration, attrs)
            return registration
        except BaseException:
            registration.close()
            raise

    def _sent(self) -> None:
        """A registration line was sent (or will never be)."""
        self._sending -= 1
        if not self._sending:
            self._all_sent.set()

    def _find_for_confirmations(self, attrs: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """:meth:`find`, parsing only the lines that changed since the confirmations' last find.

        Registrations confirmed one batch after another (100 at a time)
        re-listed and re-parsed every service registered so far: at 10,000,
        parsing was most of a registration's cost. The copy is the callers'.
        """
        return dict(self._confirmed_listing.parse(self.find_text(attrs))[0])

    def _confirm(self, registration: TCPRegistration, attrs: Mapping[str, str]) -> None:
        """Return once the registry lists *our* entry; raise if it refused it (module doc)."""
        self._confirming += 1
        try:
            self._confirm_listed(registration, attrs)
        finally:
            self._confirming -= 1
            if not self._confirming:
                gevent.spawn_later(_FORGET, self._forget_listing)

    def _forget_listing(self) -> None:
        """No registration to confirm for a while: drop the last listing (memory)."""
        if not self._confirming:
            self._confirmed_listing.reset()

    def _confirm_listed(self, registration: TCPRegistration, attrs: Mapping[str, str]) -> None:
        deadline_at = time.monotonic() + self.connect_timeout
        pause = 0.005
        in_a_row = 0  # finds that listed the name with our attributes, our connection open
        while True:
            listing = self._confirmations(self._find_for_confirmations, _filter_of(attrs))
            if registration.peer_closed:
                if registration.name in self._confirmations(self._find_for_confirmations, {}):
                    raise RegistryError("duplicate service name")
                raise ConnectionError(f"{registration._label}: closed by the registry")
            if listing.get(registration.name) == attrs:
                in_a_row += 1
                if in_a_row == 2:
                    return
                continue  # the next find starts after this one was answered
            in_a_row = 0
            if time.monotonic() > deadline_at:
                raise ConnectionError(f"{registration._label}: not listed after "
                                      f"{self.connect_timeout} s")
            gevent.sleep(pause)
            pause = min(pause * 2, 0.1)
