"""The task protocol and the base class of regmgr's own tasks."""
from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, Protocol

import gevent

if TYPE_CHECKING:
    from ..backoff import Backoff
    from ..connections import Connection
    from ..manager import RegMgr

__all__ = ["Task", "TaskBase", "safe_call"]

log = logging.getLogger("regmgr")


class Task(Protocol):
    """What :meth:`RegMgr.attach` accepts (duck-typed)."""

    manager: Optional[RegMgr]

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def refresh(self) -> None: ...


def safe_call(what: str, fn: Optional[Callable[..., Any]], *args: Any) -> None:
    """Call user code; if it raises, log it and go on (it must not kill our greenlets)."""
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        log.exception("%s raised; ignored", what)


class TaskBase:
    """A task that runs :meth:`_run` in one greenlet while connected."""

    def __init__(self) -> None:
        self._manager: Optional[weakref.ref[RegMgr]] = None
        self._greenlet: Optional[gevent.Greenlet] = None

    @property
    def manager(self) -> Optional[RegMgr]:
        """The manager this task is attached to (held weakly), or None."""
        return self._manager() if self._manager is not None else None

    @manager.setter
    def manager(self, manager: Optional[RegMgr]) -> None:
        self._manager = weakref.ref(manager) if manager is not None else None

    def start(self) -> None:
        manager = self.manager
        assert manager is not None, "start() of a task that is not attached"
        self._greenlet = gevent.spawn(self._run, manager.connection, manager.backoff)

    def stop(self) -> None:
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None and greenlet is not gevent.getcurrent():
            greenlet.kill(block=False)

    def refresh(self) -> None:
        """Most tasks ignore events."""

    def _current(self) -> bool:
        """Whether the calling greenlet is this task's live one (not stopped since)."""
        return self._greenlet is not None and self._greenlet is gevent.getcurrent()

    def _run(self, connection: Connection, backoff: Backoff) -> None:
        raise NotImplementedError

