"""RegMgr: one supervisor greenlet that keeps a registry connection and its tasks alive.

The supervisor opens the event stream, starts every attached task, feeds
them a refresh per event and, when the stream breaks, stops them, backs off
and starts over. Its state lives in :class:`_Supervisor`, which never refers
to the :class:`RegMgr` (tasks hold their manager weakly too): so when the
program drops its last reference to a RegMgr, the manager is collected and
its finalizer stops everything.
"""
from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Optional, TypeVar

import gevent
from gevent.event import Event

from .backoff import Backoff
from .connections import Connection, EventStream, Services
from .errors import AttachError, RegmgrError
from .retry import retry_loop
from .tasks import Lookup, Task, safe_call
from .wire import AttrValue

__all__ = ["RegMgr"]

log = logging.getLogger("regmgr")

Listener = Callable[[bool], Any]
T = TypeVar("T", bound=Task)


class _Supervisor:
    """Everything the supervisor greenlet touches."""

    def __init__(self, connection: Connection, backoff: Backoff) -> None:
        self.connection = connection
        self.backoff = backoff
        self.tasks: list[Task] = []
        self._each: list[Task] = []  # tasks whose own refresh() runs on every event
        self._shared: dict[Callable[[], object], int] = {}  # shared refreshes: tasks using each
        self.listeners: list[Listener] = []
        self.connected = Event()
        self.closed = False
        self._stream: Optional[EventStream] = None
        self.greenlet = gevent.spawn(self._run)

    def __repr__(self) -> str:
        return f"registry {self.connection!r}"

    def _run(self) -> None:
        retry_loop(self, self.backoff, self.connection.open_event, self._serve,
                   running=lambda: not self.closed)

    def _serve(self, stream: EventStream) -> None:
        """Run the tasks until the stream breaks (raises) or the manager closes (returns)."""
        self._stream = stream
        try:
            self._set_connected(True)
            while not self.closed:
                stream.wait()
                # Inline, not safe_call: this runs for every task on every event.
                for refresh in list(self._shared):
                    try:
                        refresh()
                    except Exception:
                        log.exception("%r raised; ignored", refresh)
                for task in list(self._each):
                    try:
                        task.refresh()
                    except Exception:
                        log.exception("%r.refresh raised; ignored", task)
        except Exception:
            if not self.closed:
                raise  # the retry loop logs it and reconnects
        finally:
            self._set_connected(False)

    def add(self, task: Task) -> None:
        """Attach ``task`` (its ``manager`` is set): refresh it from now on."""
        self.tasks.append(task)
        refresh = getattr(task, "shared_refresh", None)
        if refresh is None:
            self._each.append(task)
        else:
            self._shared[refresh] = self._shared.get(refresh, 0) + 1

    def remove(self, task: Task) -> None:
        """Detach ``task`` (before its ``manager`` is cleared); ``ValueError`` if not attached."""
        self.tasks.remove(task)
        refresh = getattr(task, "shared_refresh", None)
        if refresh is None:
            self._each.remove(task)
        elif self._shared[refresh] > 1:
            self._shared[refresh] -= 1
        else:
            del self._shared[refresh]

    def _set_connected(self, connected: bool) -> None:
        if connected == self.connected.is_set():
            return
        if connected:
            self.connected.set()
            log.info("registry %r connected", self.connection)
        else:
            self.connected.clear()
            stream, self._stream = self._stream, None
            if stream is not None:
                stream.close()
        for task in list(self.tasks):
            safe_call(f"{task!r}.{'start' if connected else 'stop'}",
                      task.start if connected else task.stop)
        for listener in list(self.listeners):
            safe_call(f"listener {listener!r}", listener, connected)

    def close(self, block: bool) -> None:
        """Stop the tasks, detach them, close the stream and end the greenlet.

        With ``block=False`` it never switches greenlets (a finalizer calls it).
        """
        if self.closed:
            return
        self.closed = True
        self._set_connected(False)
        for task in self.tasks:
            task.manager = None
        self.tasks.clear()
        self._each.clear()
        self._shared.clear()
        if self.greenlet is not gevent.getcurrent():
            self.greenlet.kill(block=block)


class RegMgr:
    """Keep ``connection``'s registry connected and every attached task running.

    ``backoff`` paces reconnects and the tasks' retries (default
    :class:`Backoff()`). Listeners get ``True``/``False`` on every
    connect/disconnect. Closing (or dropping the last reference) stops and
    detaches every task and closes every socket.
    """

    def __init__(self, connection: Connection, *, backoff: Optional[Backoff] = None) -> None:
        self.connection = connection
        self.backoff = backoff if backoff is not None else Backoff()
        self._core = _Supervisor(connection, self.backoff)
        self._finalizer = weakref.finalize(self, self._core.close, False)
        self._finalizer.atexit = False

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else "connected" if self.connected else "connecting"
        return f"<RegMgr {self.connection!r} {state}, {len(self._core.tasks)} tasks>"

    @property
    def connected(self) -> bool:
        """Whether the event stream is up (the tasks are started)."""
        return bool(self._core.connected.is_set())

    @property
    def tasks(self) -> list[Task]:
        """The attached tasks, in attach order."""
        return list(self._core.tasks)

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Block until connected; False if ``timeout`` seconds passed first."""
        return bool(self._core.connected.wait(timeout))

    def attach(self, task: T) -> T:
        """Run ``task`` whenever connected (at once if connected now); returns it."""
        if getattr(task, "manager", None) is not None:
            raise AttachError("already attached")
        if self._core.closed:
            raise RegmgrError("manager is closed")
        task.manager = self
        self._core.add(task)
        if self.connected:
            safe_call(f"{task!r}.start", task.start)
        return task

    def detach(self, task: Task) -> None:
        """Stop ``task`` and forget it; it keeps its own state."""
        if getattr(task, "manager", None) is not self:
            raise AttachError("not attached to this manager")
        self._core.remove(task)
        if self.connected:
            safe_call(f"{task!r}.stop", task.stop)
        task.manager = None

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(connected)`` on every connect (True) and disconnect (False).

        Refuses a non-callable at once, so the mistake shows here and not as
        a logged error at the next connect.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {type(listener).__name__}")
        self._core.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; ``ValueError`` if it was not added."""
        self._core.listeners.remove(listener)

    def lookup(self, attrs: Optional[Mapping[str, AttrValue]] = None,
               timeout: Optional[float] = None) -> Services:
        """Find the matching services, waiting for a connection if need be.

        Raises ``TimeoutError`` if no result came within ``timeout`` seconds.
        """
        task = self.attach(Lookup(attrs))
        try:
            return task.wait(timeout)
        finally:
            if task.manager is self:
                self.detach(task)

    def close(self) -> None:
        """Stop and detach every task, close every socket; idempotent."""
        self._core.close(block=True)
        self._finalizer.detach()

    def __enter__(self) -> RegMgr:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
