"""Lookup: one find, retried until it succeeds, then gone."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Optional

from gevent.event import Event

from ..backoff import Backoff
from ..connections import Connection, Services
from ..retry import retry_loop
from ..limits import check_service
from ..wire import AttrValue, normalize_attrs
from .base import TaskBase, safe_call

__all__ = ["Lookup"]


class Lookup(TaskBase):
    """Find the services matching ``attrs`` once; detach and report the result.

    ``callback(services)`` is called with ``{name: {attr: value}}`` after the
    task has detached itself; :meth:`wait` gives the same to blocking code.
    """

    def __init__(
        self,
        attrs: Optional[Mapping[str, AttrValue]] = None,
        *,
        callback: Optional[Callable[[Services], Any]] = None,
    ) -> None:
        super().__init__()
        self._attrs = normalize_attrs(attrs)
        check_service(None, self._attrs)
        self.callback = callback
        self._result: Services = {}
        self._done = Event()

    def __repr__(self) -> str:
        return f"Lookup({self._attrs!r})"

    @property
    def attrs(self) -> dict[str, str]:
        """The filter this lookup runs (a copy: it is fixed at construction)."""
        return dict(self._attrs)

    def wait(self, timeout: Optional[float] = None) -> Services:
        """Block until the result is in; ``TimeoutError`` after ``timeout`` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"no lookup result within {timeout} s")
        return {name: dict(attrs) for name, attrs in self._result.items()}

    def _run(self, connection: Connection, backoff: Backoff) -> None:
        retry_loop(self, backoff, lambda: connection.find(self._attrs), self._finish,
                   running=self._current)

    def _finish(self, result: Services) -> None:
        """Keep the result, detach (which ends the retry loop) and call back."""
        self._result = result
        self._done.set()
        manager = self.manager
        if manager is not None:
            manager.detach(self)
        safe_call(f"lookup callback {self.callback!r}", self.callback, self.wait())
