"""Service: keep one service registered, through every outage."""
from __future__ import annotations

import logging
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Optional, TypeVar

import gevent
from gevent.event import Event

from ..backoff import Backoff
from ..connections import Connection, Registration
from ..errors import TRANSIENT_ERRORS, RegistryError
from ..limits import check_service
from ..retry import retry_loop
from ..wire import AttrValue, normalize_attrs
from .base import TaskBase

__all__ = ["Service"]

log = logging.getLogger("regmgr")

#: After an event, the registered services check that they are still listed,
#: at most this often (seconds): the registry can drop a service without
#: closing its registration (someone removed it), and only a find tells.
RECHECK_INTERVAL = 1.0

#: Services of one connection that make their first registration attempt at
#: once (see :class:`_Turns`).
CONCURRENT_REGISTRATIONS = 100


class Service(TaskBase):
    """Register ``name`` with ``attrs`` while the manager is connected.

    A lost or refused registration is retried with backoff, and always
    carries every :meth:`update` made so far. The name and attributes are
    checked against :mod:`regmgr.limits` here and in :meth:`update`
    (``ValueError``), so the registry never sees what it would refuse.
    """

    def __init__(self, name: str, attrs: Optional[Mapping[str, AttrValue]] = None) -> None:
        super().__init__()
        if not isinstance(name, str):
            raise TypeError(f"service name must be str, not {type(name).__name__}")
        self._attrs = normalize_attrs(attrs)
        check_service(name, self._attrs)
        self.name = name
        self._registration: Optional[Registration] = None
        self._checks: Optional[_Checks] = None  # while registered
        self._dropped = False  # set by the checks: the registry no longer lists us
        self._started = False  # between start() and stop()

    def __repr__(self) -> str:
        return f"Service({self.name!r}, {self._attrs!r})"

    @property
    def attrs(self) -> dict[str, str]:
        """The current attributes: the initial ones with every update merged in."""
        return dict(self._attrs)

    @property
    def registered(self) -> bool:
        """True while the registry has accepted this service and still lists it."""
        return self._registration is not None

    def update(self, attrs: Mapping[str, AttrValue]) -> None:
        """Merge ``attrs`` into the service and send what changed, if registered.

        ``ValueError`` if the merged service would break a limit: then
        nothing changes, here or in the registry.
        """
        changed = {k: v for k, v in normalize_attrs(attrs).items() if self._attrs.get(k) != v}
        if not changed:
            return
        check_service(self.name, {**self._attrs, **changed})
        self._attrs.update(changed)
        registration = self._registration
        if registration is not None:
            try:
                registration.update(changed)
            except TRANSIENT_ERRORS as err:  # the keeper sees the loss and re-registers
                log.info("service %r: update not sent: %s", self.name, err)

    def refresh(self) -> None:
        checks = self._checks
        if checks is not None:
            checks.wanted.set()

    @property
    def shared_refresh(self) -> Optional[Callable[[], None]]:
        """What :meth:`refresh` does for every registered Service of the manager's
        connection at once: the manager calls it once per event instead of calling
        each Service's :meth:`refresh` (1.4 ms per event at 10,000 Services)."""
        manager = self.manager
        if manager is None:
            return None
        return _checks_of(manager.connection).refresh

    def start(self) -> None:
        manager = self.manager
        assert manager is not None, "start() of a task that is not attached"
        self._started = True
        _turns_of(manager.connection).start(self, manager.connection, manager.backoff)

    def _spawn(self, connection: Connection, backoff: Backoff, pause: float,
               turns: _Turns) -> None:
        """Run a registering greenlet; its turn ends after its first attempt, or with it."""
        held = [turns]

        def end_turn(*_: object) -> None:
            if held:
                held.pop().done()

        greenlet = self._greenlet = gevent.spawn(self._keep, connection, backoff, pause, end_turn)
        greenlet.rawlink(end_turn)  # killed before its first attempt: the turn ends too

    def stop(self) -> None:
        self._started = False
        super().stop()
        registration, self._registration = self._registration, None
        if registration is not None:
            registration.close()  # its notify callback cleans up

    def _keep(self, connection: Connection, backoff: Backoff, pause: float,
             end_turn: Callable[[], None]) -> None:
        """Register (retried with backoff), then hand the registration over and end."""
        if pause:
            gevent.sleep(pause)
        retry_loop(self, backoff, lambda: self._first_attempt(connection, end_turn),
                   lambda registration: self._hand_over(connection, backoff, registration),
                   running=self._current)

    def _first_attempt(self, connection: Connection, end_turn: Callable[[], None]
                       ) -> Registration:
        try:
            return self._register(connection)
        finally:
            end_turn()  # later attempts (after a refusal) let the next service start

    def _register(self, connection: Connection) -> Registration:
        sent = dict(self._attrs)
        registration = connection.open_new(self.name, sent)
        if not self._current():
            # Stopped (detached) while open_new was under way: a kill that comes
            # after open_new's last wait was answered lands too late to stop it.
            registration.close()
            raise gevent.GreenletExit
        try:
            # Updates made while open_new was under way are not in `sent`.
            registration.update({k: v for k, v in self._attrs.items() if sent.get(k) != v})
        except BaseException:
            registration.close()
            raise
        self._registration = registration
        self._dropped = False
        log.info("service %r: registered", self.name)
        return registration

    def _hand_over(self, connection: Connection, backoff: Backoff,
                   registration: Registration) -> None:
        """Leave the registration to its notify callback and end this greenlet.

        A registered service holds no greenlet (a parked one costs some 16 KiB):
        :meth:`_ended` runs when the registration ends, and starts a new
        greenlet if it was lost. The checks close a registration that the
        registry no longer lists.
        """
        checks = self._checks = _checks_of(connection)
        checks.watch(self, registration, connection)
        try:
            registration.notify(lambda error: self._ended(connection, backoff, registration,
                                                          error))
        except BaseException:
            checks.unwatch(self, registration)
            self._registration = self._checks = None
            registration.close()
            raise
        self._greenlet = None  # so the retry loop ends

    def _ended(self, connection: Connection, backoff: Backoff, registration: Registration,
               error: Optional[Exception]) -> None:
        """The registration ended (in the hub: never blocks); register again if it was lost."""
        try:
            checks = _checks.get(connection)
            if checks is not None:
                checks.unwatch(self, registration)
            if self._registration is registration:
                self._registration = None
                self._checks = None
            registration.close()
            if error is None and self._dropped:
                error = RegistryError("no longer listed by the registry")
            if (error is None or not self._started or self._greenlet is not None
                    or self._registration is not None):
                return  # closed by stop(), or already registering (or registered) again
            log.warning("%.200r: lost: %s", self, error)
            _turns_of(connection).start(self, connection, backoff, next(backoff.delays()))
        except Exception:
            log.exception("%.200r: cannot handle the end of its registration", self)


class _Checks:
    """Check, for every registered Service of one connection, that the registry lists it.

    After an event (:attr:`wanted`), at most once per :data:`RECHECK_INTERVAL`,
    one greenlet runs one find for all of them, filtered by the attributes
    they have in common, and drops each one it missed (closes its registration).
    (A check per Service took N finds of N services, and a greenlet wake-up
    per Service, every second of churn: most of a process's CPU at 10,000
    services.)
    """

    def __init__(self) -> None:
        self._watched: dict[Service, Registration] = {}
        self.wanted = Event()  # the registry changed: check at the next opportunity
        self._greenlet: Optional[gevent.Greenlet] = None

    def refresh(self) -> None:
        """The registry changed: check the watched services, if any (see :meth:`Service.refresh`)."""
        if self._watched:
            self.wanted.set()

    def watch(self, service: Service, registration: Registration, connection: Connection) -> None:
        self._watched[service] = registration
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run, connection)

    def unwatch(self, service: Service, registration: Registration) -> None:
        if self._watched.get(service) is registration:
            del self._watched[service]
        if not self._watched and self._greenlet is not None:
            self._greenlet.kill(block=False)  # it holds the connection
            self._greenlet = None

    def _run(self, connection: Connection) -> None:
        while True:
            self.wanted.wait()
            self.wanted.clear()
            watched = list(self._watched.items())
            try:
                missing = _missing(connection, watched)
            except TRANSIENT_ERRORS as err:
                log.info("cannot check %d registrations: %s", len(watched), err)
            except Exception:
                log.exception("cannot check %d registrations", len(watched))
            else:
                for service, registration in missing:
                    if self._watched.get(service) is registration:  # not re-registered since
                        service._dropped = True
                        registration.close()  # the service's _ended registers it again
            gevent.sleep(RECHECK_INTERVAL)


_T = TypeVar("_T")

#: The checks of each connection's services.
_checks: weakref.WeakKeyDictionary[Connection, _Checks] = weakref.WeakKeyDictionary()


def _checks_of(connection: Connection) -> _Checks:
    return _kept(_checks, connection, _Checks)


def _kept(table: weakref.WeakKeyDictionary[Connection, _T], connection: Connection,
          make: Callable[[], _T]) -> _T:
    """``connection``'s entry of ``table``, made on first use (it goes with the connection)."""
    value = table.get(connection)
    if value is None:
        value = table[connection] = make()
    return value


class _Turns:
    """One connection's Services register :data:`CONCURRENT_REGISTRATIONS` at a time.

    The others wait in line without a greenlet. A registering greenlet costs
    some 20 KiB while it lives, and the allocator keeps that peak: 10,000
    Services started at once left 8 KiB of RSS per service behind, 100 at a
    time 3 KiB. A turn ends after the first attempt, so services that the
    registry refuses (and retry with backoff) never hold up the others.
    """

    def __init__(self) -> None:
        self._running = 0
        self._waiting: deque[tuple[Service, Connection, Backoff, float]] = deque()

    def start(self, service: Service, connection: Connection, backoff: Backoff,
              pause: float = 0.0) -> None:
        if self._running < CONCURRENT_REGISTRATIONS:
            self._running += 1
            service._spawn(connection, backoff, pause, self)
        else:
            self._waiting.append((service, connection, backoff, pause))

    def done(self) -> None:
        """A turn ended: start the next service in line that still wants one."""
        self._running -= 1
        while self._waiting and self._running < CONCURRENT_REGISTRATIONS:
            service, connection, backoff, pause = self._waiting.popleft()
            manager = service.manager
            if (service._started and service._greenlet is None
                    and service._registration is None and manager is not None
                    and manager.connection is connection):  # not moved to another since
                self._running += 1
                service._spawn(connection, backoff, pause, self)


_turns: weakref.WeakKeyDictionary[Connection, _Turns] = weakref.WeakKeyDictionary()


def _turns_of(connection: Connection) -> _Turns:
    return _kept(_turns, connection, _Turns)


def _missing(connection: Connection, watched: list[tuple[Service, Registration]]
             ) -> list[tuple[Service, Registration]]:
    """The watched services that the registry does not list."""
    listed = connection.find(_common(service._attrs for service, _ in watched))
    missing = [(s, r) for s, r in watched if s.name not in listed]
    if missing:  # an update may still be on its way: confirm with a find of everything
        listed = connection.find()
        missing = [(s, r) for s, r in missing if s.name not in listed]
    return missing


#: Characters of a check's filter: a filter narrows the listing, and a long one
#: would be over a Styx session's write limit (a service may hold 32 KiB).
CHECK_FILTER = 1024


def _common(attrs: Iterable[dict[str, str]]) -> dict[str, str]:
    """Attribute-value pairs that every one of ``attrs`` holds, at most
    :data:`CHECK_FILTER` characters of them."""
    each = iter(attrs)
    common = dict(next(each, {}))
    for other in each:
        if not common:
            break
        common = {k: v for k, v in common.items() if other.get(k) == v}
    size = 0
    for key, value in list(common.items()):
        if size + len(key) + len(value) + 2 > CHECK_FILTER:
            del common[key]  # the listing may hold more services; the check looks names up
        else:
            size += len(key) + len(value) + 2
    return common

