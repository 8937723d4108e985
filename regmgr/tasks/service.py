"""Service: keep one service registered, through every outage."""
from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from typing import Optional

import gevent
from gevent.event import Event

from ..backoff import Backoff
from ..connections import Connection, Registration
from ..connections.shared import SharedListing
from ..errors import RegistryError, RegmgrError
from ..wire import AttrValue, normalize_attrs, service_name_error
from .base import TaskBase

__all__ = ["Service"]

log = logging.getLogger("regmgr")

#: After an event, a registered service checks that it is still listed, at
#: most this often (seconds): the registry can drop a service without
#: closing its registration (someone removed it), and only a find tells.
RECHECK_INTERVAL = 1.0

#: The services of one connection run those checks together: one find per
#: round for all of them, not one each (N finds of N services after every event).
_checks: weakref.WeakKeyDictionary[Connection, SharedListing] = weakref.WeakKeyDictionary()


class Service(TaskBase):
    """Register ``name`` with ``attrs`` while the manager is connected.

    A lost or refused registration is retried with backoff, and always
    carries every :meth:`update` made so far.
    """

    def __init__(self, name: str, attrs: Optional[Mapping[str, AttrValue]] = None) -> None:
        super().__init__()
        if not isinstance(name, str):
            raise TypeError(f"service name must be str, not {type(name).__name__}")
        error = service_name_error(name)
        if error is not None:
            raise ValueError(f"{error}: {name!r}")
        self.name = name
        self._attrs = normalize_attrs(attrs)
        self._registration: Optional[Registration] = None
        self._recheck = Event()

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
        """Merge ``attrs`` into the service and send what changed, if registered."""
        changed = {k: v for k, v in normalize_attrs(attrs).items() if self._attrs.get(k) != v}
        if not changed:
            return
        self._attrs.update(changed)
        registration = self._registration
        if registration is not None:
            try:
                registration.update(changed)
            except ConnectionError as err:  # the keeper sees the loss and re-registers
                log.info("service %r: update not sent: %s", self.name, err)

    def refresh(self) -> None:
        if self._registration is not None:
            self._recheck.set()

    def stop(self) -> None:
        super().stop()
        registration, self._registration = self._registration, None
        if registration is not None:
            registration.close()

    def _run(self, connection: Connection, backoff: Backoff) -> None:
        delays = backoff.delays()
        while self._current():
            try:
                registration = self._register(connection)
            except (ConnectionError, RegmgrError) as err:
                log.warning("service %r: not registered: %s", self.name, err)
            else:
                delays = backoff.delays()
                try:
                    self._watch(connection, registration)
                except (ConnectionError, RegmgrError) as err:
                    log.warning("service %r: registration lost: %s", self.name, err)
                finally:
                    if self._registration is registration:
                        self._registration = None
                    registration.close()
            if self._current():
                gevent.sleep(next(delays))

    def _register(self, connection: Connection) -> Registration:
        sent = dict(self._attrs)
        registration = connection.open_new(self.name, sent)
        try:
            # Updates made while open_new was under way are not in `sent`.
            registration.update({k: v for k, v in self._attrs.items() if sent.get(k) != v})
        except BaseException:
            registration.close()
            raise
        self._registration = registration
        self._recheck.clear()
        log.info("service %r: registered", self.name)
        return registration

    def _watch(self, connection: Connection, registration: Registration) -> None:
        """Return or raise when the registration is lost (or closed by stop())."""
        waiter = gevent.spawn(_outcome, registration)
        try:
            while True:
                gevent.wait([waiter, self._recheck], count=1)
                if waiter.ready():
                    if waiter.value is not None:
                        raise waiter.value  # lost; None: stop() closed it
                    return
                self._recheck.clear()
                if not self._listed(connection):
                    raise RegistryError("no longer listed by the registry")
                waiter.join(RECHECK_INTERVAL)
        finally:
            waiter.kill(block=False)

    def _listed(self, connection: Connection) -> bool:
        # An update may still be on its way, so a miss under the current
        # attributes is confirmed by a find of everything.
        checks = _checks.setdefault(connection, SharedListing())
        return (self.name in checks(connection.find, self._attrs)
                or self.name in checks(connection.find, {}))


def _outcome(registration: Registration) -> Optional[Exception]:
    """Wait on ``registration``; return why it ended (a greenlet that raised would be printed)."""
    try:
        registration.wait()
    except (ConnectionError, RegmgrError) as err:
        return err
    return None
