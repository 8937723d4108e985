"""Monitor: keep a view of the matching services and report every change."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Optional

from gevent.event import Event

from ..backoff import Backoff
from ..connections import Connection, Services
from ..listing import ListingParser
from ..retry import retry_loop
from ..limits import check_service
from ..wire import AttrValue, normalize_attrs
from .base import TaskBase, safe_call

__all__ = ["Monitor"]

Callback = Optional[Callable[[str, dict[str, str]], Any]]
StaleCallback = Optional[Callable[[bool], Any]]


class Monitor(TaskBase):
    """Watch the services matching ``attrs``; call back on every difference.

    ``on_add(name, attrs)`` for a new service, ``on_mod(name, attrs)`` with
    the new attributes of a changed one, ``on_del(name, attrs)`` with the
    last known attributes of a vanished one. The view survives a lost
    connection, so the first finds after a reconnect report exactly what
    changed during the outage.

    Events are coalesced: one find runs at a time and at most one more is
    pending, so under constant churn the monitor still delivers.

    A service is reported deleted when two finds in a row miss it: a
    registry killed while it answers a find can cut the listing short.

    A restarted registry comes back empty and its services re-register over
    the next moments; after a partition, a registry may still list the
    owners' old entries and drop them moments later, when it notices their
    old connections are gone, before the owners register again. So after
    every (re)start, a service the view already held is reported deleted
    only if the find at the end of ``settle`` seconds (0: at once) misses
    it; until then it stays in the view, and if it comes back changed that
    is one ``on_mod``. Additions, changes and other deletions are reported
    at once.

    :attr:`stale` is true from a disconnection until the first find after
    the reconnect has been applied; ``on_stale(stale)`` hears each change
    (``True``: the view may be out of date). The callbacks are keyword-only.

    With a connection that offers ``find_text`` (both of regmgr's do), a
    refresh parses and compares only the services whose listing line
    changed since the last find (see :class:`~regmgr.listing.ListingParser`).
    """

    def __init__(
        self,
        attrs: Optional[Mapping[str, AttrValue]] = None,
        *,
        on_add: Callback = None,
        on_del: Callback = None,
        on_mod: Callback = None,
        on_stale: StaleCallback = None,
        settle: float = 2.0,
    ) -> None:
        super().__init__()
        self._attrs = normalize_attrs(attrs)
        check_service(None, self._attrs)
        self.on_add = on_add
        self.on_del = on_del
        self.on_mod = on_mod
        self.on_stale = on_stale
        self.settle = settle
        self._services: Services = {}
        self._wanted = Event()  # a find is pending
        self._delivering = False
        self._stale = True
        self._settle_until = 0.0
        self._unconfirmed: set[str] = set()  # in the view at start(): deletions wait for settle
        self._missing: set[str] = set()  # in the view, not listed by the last find
        self._listing = ListingParser()  # the last find's lines

    def __repr__(self) -> str:
        return f"Monitor({self._attrs!r})"

    @property
    def attrs(self) -> dict[str, str]:
        """The filter this monitor watches (a copy: it is fixed at construction)."""
        return dict(self._attrs)

    @property
    def services(self) -> Services:
        """The last known view, ``{name: attrs}`` (kept while disconnected)."""
        return {name: dict(attrs) for name, attrs in self._services.items()}

    @property
    def stale(self) -> bool:
        """Whether the view may be out of date: disconnected, or no find since."""
        return self._stale

    def start(self) -> None:
        self._settle_until = time.monotonic() + self.settle
        self._unconfirmed = set(self._services)
        self._missing = set()
        self._listing.reset()  # the view may lag the last listing: compare it all
        self._wanted.set()
        super().start()

    def refresh(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        # A callback under way is not interrupted: the worker leaves after it.
        if self._delivering:
            self._greenlet = None
        else:
            super().stop()
        self._set_stale(True)

    def _run(self, connection: Connection, backoff: Backoff) -> None:
        retry_loop(self, backoff, lambda: self._update(connection), _nothing,
                   running=self._current)

    def _update(self, connection: Connection) -> None:
        """Wait until a find is wanted, run it and apply it; on failure want another."""
        # When the settle period ends, a find decides the held deletions.
        self._wanted.wait(self._settle_left() if self._unconfirmed else None)
        self._wanted.clear()
        find_text = getattr(connection, "find_text", None)
        try:
            if find_text is None:
                self._apply(connection.find(self._attrs), None)
            else:
                self._apply(*self._listing.parse(find_text(self._attrs)))
        except Exception:
            self._wanted.set()  # after the retry loop's backoff delay
            raise

    def _settle_left(self) -> float:
        return max(0.0, self._settle_until - time.monotonic())

    def _apply(self, found: Services, changed: Optional[list[str]]) -> None:
        """Bring the view to ``found``, one change and one callback at a time.

        Only the services named in ``changed`` can differ from the view's
        (None: any of them can).
        """
        if not self._settle_left():
            self._unconfirmed.clear()
        view = self._services
        if changed is None:
            missing = view.keys() - found.keys()
        else:  # only a changed name can have come into or left the listing since the last find
            missing = {name for name in self._missing if name in view and name not in found}
            missing.update(name for name in changed if name in view and name not in found)
        # A registry that dies while it answers a find cuts the listing short,
        # which looks like deletions: only two finds in a row decide one.
        doubtful = missing - self._missing
        self._missing = missing
        if doubtful:
            self._wanted.set()
        for name in missing - doubtful - self._unconfirmed:
            self._deliver(self.on_del, name, view.pop(name))
            if not self._current():
                return
        for name in found if changed is None else changed:
            attrs = found.get(name)
            old = view.get(name)
            if attrs is None or old is attrs or old == attrs:
                continue
            view[name] = attrs
            self._deliver(self.on_add if old is None else self.on_mod, name, attrs)
            if not self._current():
                return
        self._set_stale(False)

    def _deliver(self, callback: Callback, name: str, attrs: dict[str, str]) -> None:
        self._delivering = True
        try:
            safe_call(f"monitor callback {callback!r}", callback, name, dict(attrs))
        finally:
            self._delivering = False

    def _set_stale(self, stale: bool) -> None:
        if stale != self._stale:
            self._stale = stale
            safe_call(f"monitor on_stale {self.on_stale!r}", self.on_stale, stale)


def _nothing(_: None) -> None:
    """Nothing to hold between two finds: each attempt is a whole find."""
