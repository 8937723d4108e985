"""The three-port plain-TCP gateway transport (registry4.md §6).

One TCP connection per registration (the gateway's own rule: the
connection *is* the registration), one per find, one for the event stream.

The gateway never acknowledges a registration; a refused one only shows as
the server closing the connection. So :meth:`TCP.open_new` confirms: after
sending the line it runs finds filtered by the service's attributes until
the name is listed while its connection is still open (accepted), or the
connection closes (refused; a find of everything then tells a ``duplicate
service name`` from a registry that went away). Registrations confirmed at
the same time share those finds (:class:`~.shared.SharedListing`).
"""
from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Optional

import gevent
import gevent.socket

from ..errors import ProtocolError, RegistryError
from ..wire import format_attrs, format_service, parse_services, service_name_error
from .shared import SharedListing

__all__ = ["TCP", "TCPEventStream", "TCPRegistration", "FIND_LIMIT"]

#: Largest find reply accepted, as the Perl client caps it.
FIND_LIMIT = 1 << 20
_EVENT_LINE_LIMIT = 1024
_VERSION = re.compile(rb"\d+")
# Keepalive probes notice a peer that vanished without a FIN (a dead host or
# a cut cable) in about 25 s instead of the kernel's default two hours.
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))


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


def _keepalive(sock: gevent.socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in _KEEPALIVE:
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


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


class TCPEventStream:
    """The event port after ``READY``: one version line per coalesced change."""

    def __init__(self, sock: gevent.socket.socket, label: str) -> None:
        self._sock = sock
        self._label = label
        self._buffer = b""

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
        line = self._readline()
        if not _VERSION.fullmatch(line):
            raise ProtocolError(f"{self._label}: bad event line", line)
        return int(line)

    def close(self) -> None:
        self._sock.close()


class TCPRegistration:
    """One registered service: the open connection to the new port."""

    def __init__(self, sock: gevent.socket.socket, name: str, label: str) -> None:
        self.name = name
        self._sock = sock
        self._label = label
        self._closed = False

    def update(self, attrs: Mapping[str, str]) -> None:
        if not attrs:
            return  # an empty write is `bad syntax`: it would unregister us
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

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    @property
    def peer_closed(self) -> bool:
        return _peer_closed(self._sock)


class TCP:
    """Reach a registry through the three-port TCP gateway.

    ``connect_timeout`` bounds connecting, the ``READY`` greeting, each
    read of a find reply and the confirmation of a registration.
    """

    def __init__(
        self,
        host: str,
        new_port: int = 6701,
        find_port: int = 6702,
        event_port: int = 6703,
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        if not isinstance(host, str):
            raise TypeError(f"host must be str, not {type(host).__name__}")
        self.host = host
        self.new_port = new_port
        self.find_port = find_port
        self.event_port = event_port
        self.connect_timeout = connect_timeout
        self._family = _address_family(host)
        self._confirmations = SharedListing()

    def __repr__(self) -> str:
        return (f"TCP({self.host!r}, new_port={self.new_port}, "
                f"find_port={self.find_port}, event_port={self.event_port})")

    def _connect(self, port: int, label: str) -> gevent.socket.socket:
        with _link(label):
            if self._family is None:
                return gevent.socket.create_connection((self.host, port),
                                                       timeout=self.connect_timeout)
            # An address, not a name: skip the resolver, which gevent runs in a
            # thread (half the cost of connecting on loopback).
            sock = gevent.socket.socket(self._family, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.connect_timeout)
                sock.connect((self.host, port))
            except BaseException:
                sock.close()
                raise
            return sock

    def open_event(self) -> TCPEventStream:
        label = f"event {self.host}:{self.event_port}"
        sock = self._connect(self.event_port, label)
        try:
            stream = TCPEventStream(sock, label)
            greeting = stream._readline()
            if greeting != b"READY":
                raise ProtocolError(f"{label}: expected READY", greeting)
            sock.settimeout(None)
            _keepalive(sock)
            return stream
        except BaseException:
            sock.close()
            raise

    def find(self, attrs: Optional[Mapping[str, str]] = None) -> dict[str, dict[str, str]]:
        attrs = attrs or {}
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
        if any("\n" in k or "\n" in v for k, v in attrs.items()):  # matched here: re-listed
            return "".join(format_service(name, have) for name, have in self.find(attrs).items())
        return self._find(attrs)

    def _find(self, attrs: Mapping[str, str]) -> str:
        label = f"find {self.host}:{self.find_port}"
        request = (format_attrs(attrs) + "\n").encode("utf-8")
        chunks = []
        size = 0
        with self._connect(self.find_port, label) as sock, _link(label):
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
        error = service_name_error(name)
        if error is not None:
            raise RegistryError(error)  # what the registry would say, without the round trip
        attrs = dict(attrs or {})
        label = f"new {self.host}:{self.new_port} {name!r}"
        sock = self._connect(self.new_port, label)
        registration = TCPRegistration(sock, name, label)
        try:
            _keepalive(sock)
            with _link(label):
                sock.sendall(format_service(name, attrs).encode("utf-8"))
            sock.settimeout(None)
            self._confirm(registration, attrs)
            return registration
        except BaseException:
            registration.close()
            raise

    def _confirm(self, registration: TCPRegistration, attrs: Mapping[str, str]) -> None:
        """Return once the registry lists the service; raise if it refused it."""
        deadline = time.monotonic() + self.connect_timeout
        pause = 0.005
        while True:
            listed = registration.name in self._confirmations(self.find, attrs)
            if registration.peer_closed:
                if registration.name in self._confirmations(self.find, {}):
                    raise RegistryError("duplicate service name")
                raise ConnectionError(f"{registration._label}: closed by the registry")
            if listed:
                return
            if time.monotonic() > deadline:
                raise ConnectionError(f"{registration._label}: not listed after "
                                      f"{self.connect_timeout} s")
            gevent.sleep(pause)
            pause = min(pause * 2, 0.1)
