"""Transports: how regmgr reaches a registry, behind one small interface.

A transport is a :class:`Connection`. :class:`~regmgr.manager.RegMgr` and
the tasks use nothing else, so a new transport (``styx.py`` beside
``tcp.py``) only has to implement the three protocols below.

Rules every transport follows:

* Every method is blocking-style and meant to run in a gevent greenlet.
  A greenlet blocked in one may be killed at any time (``GreenletExit``);
  the transport must then leave no socket open.
* Failures raise, never return sentinels: ``ConnectionError`` when the
  registry cannot be reached or the link broke (a timeout is one too),
  :class:`~regmgr.errors.ProtocolError` when the peer sent something that
  is not the registry protocol, :class:`~regmgr.errors.RegistryError`
  with the registry's own text when it refused a request.
* Attributes passed in are already normalised (``dict[str, str]``, see
  :func:`regmgr.wire.normalize_attrs`).
* A connection may also offer ``find_text(attrs) -> str``: :meth:`Connection.find`'s
  listing as the registry sent it (``index`` format). The Monitor then
  parses only the lines that changed since its last find.
* A connection object holds no resources between calls beyond the streams
  and registrations it returned: closing those releases everything, so one
  connection object may be shared by several managers.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Optional, Protocol

from .styx import Styx
from .tcp import TCP

__all__ = ["Connection", "EventStream", "Registration", "Services", "Styx", "TCP"]

#: Services as the registry lists them: ``{name: {attr: value}}``.
Services = dict[str, dict[str, str]]


class EventStream(Protocol):
    """An open ``event`` file: tells that the registry changed."""

    def wait(self) -> int:
        """Block until the registry changes; return its new version.

        Changes between two calls are coalesced into one. Raises
        ``ConnectionError`` when the stream ends (registry gone).
        """

    def close(self) -> None:
        """Release the stream; idempotent, never blocks."""


class Registration(Protocol):
    """A service registered by this client; it lives as long as this object.

    ``name`` is the registered service name.
    """

    name: str

    def update(self, attrs: Mapping[str, str]) -> None:
        """Add or change attributes (never remove one); empty is a no-op.

        Raises ``ConnectionError`` if the registration is already lost.
        """

    def wait(self) -> None:
        """Block while the registration stands.

        Returns when :meth:`close` was called; raises ``ConnectionError``
        (or :class:`~regmgr.errors.RegistryError`) when the registry dropped
        the service or the link broke.
        """

    def notify(self, callback: Callable[[Optional[Exception]], object]) -> None:
        """Call ``callback(error)`` once, from the hub, when the registration ends.

        ``error`` is None after :meth:`close`, else what :meth:`wait` would
        raise. The callback must not block. Unlike :meth:`wait` it needs no
        greenlet: a process holding 10,000 registrations holds no 10,000
        parked greenlets (about 16 KiB each). Call it at most once.
        """

    def close(self) -> None:
        """Unregister (unless the service has ``persist``); idempotent, never blocks."""


class Connection(Protocol):
    """A way to reach one registry."""

    def open_event(self) -> EventStream:
        """Open the change stream; no change after this returns is missed."""

    def open_new(self, name: str, attrs: Optional[Mapping[str, str]] = None) -> Registration:
        """Register ``name`` with ``attrs``; return once the registry accepted it.

        Raises :class:`~regmgr.errors.RegistryError` with the registry's
        text when it refused (``duplicate service name``, a bad name).
        """

    def find(self, attrs: Optional[Mapping[str, str]] = None) -> Services:
        """The services matching every ``attr value`` pair (``*``: any value).

        ``None`` or ``{}`` matches every service. Returns ``{name: attrs}``.
        """
