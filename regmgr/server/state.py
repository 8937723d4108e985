"""The registry's model, with no I/O: services, filters and the version.

This reproduces the semantics of Inferno's ``ndb/registry`` (registry4.md
§3-5) so that the TCP gateway and the Styx file server are thin frontends.
Services are indexed by id and by name; only :meth:`Registry.find` and
:meth:`Registry.index` walk the whole table. The listing order is Inferno's:
a slot table where a removal moves the last service into the freed slot.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Optional

from ..errors import RegistryError
from ..wire import format_service, service_name_error, unquote

__all__ = ["Filter", "Registry", "Service", "Watcher", "parse_filter", "persist_value"]

#: Error text of a write to a service that no longer exists (Inferno's Egreg).
GONE = "buggy program!"

Filter = list[tuple[str, str]]

_LEADING_INT = re.compile(r"\s*[+-]?\d+")


def persist_value(text: Optional[str]) -> int:
    """Read a ``persist`` value as Limbo's ``int`` does: leading digits, else 0."""
    if text is None:
        return 0
    match = _LEADING_INT.match(text)
    return int(match.group()) if match else 0


def parse_filter(text: str) -> Filter:
    """Turn a write to ``find`` into ``(attr, value)`` pairs; no words: no filter."""
    words = unquote(text)
    if len(words) % 2:
        raise RegistryError("odd attribute/value pairs")
    return list(zip(words[0::2], words[1::2]))


class Service:
    """One entry of the registry: anonymous until its first write names it."""

    __slots__ = ("id", "owner", "name", "attrs", "slot", "vers", "removed", "_line")

    def __init__(self, id: int, owner: str, slot: int) -> None:
        self.id = id
        self.owner = owner
        self.name: Optional[str] = None
        self.attrs: list[tuple[str, str]] = []
        self.slot = slot
        self.vers = 0
        self.removed = False
        self._line: Optional[str] = None

    def get(self, attr: str) -> Optional[str]:
        for name, value in self.attrs:
            if name == attr:
                return value
        return None

    def set(self, attr: str, value: str) -> None:
        """Set one attribute with Inferno's ordering.

        A new attribute goes in front; changing one keeps its place but
        reverses the attributes in front of it (``[x y a z]`` -> ``[y x a z]``).
        """
        self._line = None
        for i, (name, _) in enumerate(self.attrs):
            if name == attr:
                self.attrs[: i + 1] = self.attrs[i - 1:: -1] if i else []
                self.attrs.insert(i, (attr, value))
                return
        self.attrs.insert(0, (attr, value))

    def matches(self, pairs: Filter) -> bool:
        # No dict of the attributes: a find calls this for every service.
        for attr, value in pairs:
            have = self.get(attr)
            if have is None or (value != "*" and have != value):
                return False
        return True

    @property
    def line(self) -> str:
        """This service in ``index`` format, cached until it changes."""
        if self._line is None:
            assert self.name is not None
            self._line = format_service(self.name, dict(self.attrs))
        return self._line

    @property
    def persistent(self) -> bool:
        return persist_value(self.get("persist")) != 0


class Watcher:
    """One reader of ``event``: remembers the last version it reported."""

    __slots__ = ("_registry", "seen")

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self.seen = registry.version

    def poll(self) -> Optional[int]:
        """The current version if it moved since the last poll (coalesced)."""
        version = self._registry.version
        if version == self.seen:
            return None
        self.seen = version
        return version


class Registry:
    """All services of one registry and its version counter."""

    def __init__(self) -> None:
        self.version = 0
        self._slots: list[Service] = []
        self._by_id: dict[int, Service] = {}
        self._by_name: dict[str, Service] = {}
        self._next_id = 0
        self._listeners: list[Callable[[int], None]] = []

    # -- change notification -------------------------------------------------

    def subscribe(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(version)`` after every change (frontends wake readers)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[int], None]) -> None:
        self._listeners.remove(listener)

    def watch(self) -> Watcher:
        return Watcher(self)

    def _changed(self) -> None:
        self.version += 1
        for listener in list(self._listeners):
            listener(self.version)

    # -- services ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_name)

    def create(self, owner: str) -> Service:
        """Open ``new``: an anonymous service that lists nowhere until named."""
        svc = Service(self._next_id, owner, len(self._slots))
        self._next_id += 1
        self._slots.append(svc)
        self._by_id[svc.id] = svc
        return svc

    def get(self, name: str) -> Optional[Service]:
        return self._by_name.get(name)

    def by_id(self, id: int) -> Optional[Service]:
        return self._by_id.get(id)

    def write(self, svc: Service, text: str) -> None:
        """Apply one write to a service file (the first write names it)."""
        if svc.removed:
            raise RegistryError(GONE)
        words = unquote(text)
        if not words:
            raise RegistryError("bad syntax")
        if svc.name is None:
            name = words.pop(0)
            error = service_name_error(name)
            if error is None and name in self._by_name:
                error = "duplicate service name"
            if error is not None:
                raise RegistryError(error)
            svc.name = name
            self._by_name[name] = svc
        if len(words) % 2:
            raise RegistryError("odd attribute/value pairs")
        for attr, value in zip(words[0::2], words[1::2]):
            svc.set(attr, value)
        svc.vers += 1
        self._changed()

    def add_static(self, name: str, attrs: Iterable[tuple[str, str]], owner: str = "registry") -> bool:
        """Add a persistent service from the static database; False if refused."""
        if service_name_error(name) is not None or name in self._by_name:
            return False
        svc = self.create(owner)
        svc.name = name
        self._by_name[name] = svc
        for attr, value in attrs:
            svc.set(attr, value)
        self.version += 1
        return True

    def release(self, svc: Service, *, force: bool = False) -> None:
        """The file opened on ``new`` was closed: drop the service unless it persists.

        ``force`` is ORCLOSE: the service goes even if persistent.
        """
        if not svc.removed and (force or not svc.persistent):
            self._drop(svc)

    def remove(self, svc: Service, user: str) -> None:
        """Tremove of a service file: only its owner may."""
        if svc.removed or svc.owner != user:
            raise RegistryError("permission denied")
        self._drop(svc)

    def _drop(self, svc: Service) -> None:
        svc.removed = True
        del self._by_id[svc.id]
        last = self._slots.pop()
        if last is not svc:
            self._slots[svc.slot] = last
            last.slot = svc.slot
        if svc.name is not None:
            del self._by_name[svc.name]
            self._changed()

    # -- listings ------------------------------------------------------------

    def find(self, pairs: Filter) -> str:
        """Every named service matching all pairs (``*`` matches any value)."""
        return "".join(
            svc.line for svc in self._slots
            if svc.name is not None and (not pairs or svc.matches(pairs))
        )

    def index(self) -> str:
        return self.find([])

    def services(self) -> Iterable[Service]:
        """Named services in listing order."""
        return (svc for svc in self._slots if svc.name is not None)
