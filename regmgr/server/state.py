"""The registry's model, with no I/O: services, filters and the version.

This reproduces the semantics of Inferno's ``ndb/registry`` (registry4.md
§3-5) so that the TCP gateway and the Styx file server are thin frontends.
Services are indexed by id, by name and by attribute (:mod:`.index`):
only :meth:`Registry.index` and finds matching much of the table walk it. The listing order is Inferno's:
a slot table where a removal moves the last service into the freed slot.

Every write is checked against :class:`~regmgr.limits.Limits` before it
changes anything (a refused write changes nothing, except that a first
write with an odd word count still names the service, as in Inferno). So a
service holds at most ``limits.attrs`` attributes, and an attribute write
costs one dict operation plus an order update of at most ``limits.attrs``
steps (Inferno's order quirk reverses a prefix, which no O(1) structure
does; the limit makes it a constant, 128 by default, done by C slicing).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Optional

from ..errors import RegistryError
from ..limits import DEFAULT_LIMITS, Limits, service_error
from ..wire import format_service, quote, service_name_error, unquote
from .index import AttrIndex

__all__ = ["Filter", "Registry", "Service", "Watcher", "parse_filter", "persist_value"]

#: Error text of a write to a service that no longer exists (Inferno's Egreg).
GONE = "buggy program!"

Filter = list[tuple[str, str]]

_LEADING_INT = re.compile(r"\s*[+-]?\d+")
_SLOT = attrgetter("slot")
#: Listings kept for the registry as it is now (any change drops them all):
#: at most this many filters, and this many characters in all.
_CACHED_FINDS = 64
_CACHED_CHARS = 16 << 20
#: Slots per block of a full listing kept joined: after one change, a
#: listing of 10,000 joins 40 blocks and one block's lines, not 10,000 lines.
_BLOCK = 256


def _qlen(word: str) -> int:
    """UTF-8 bytes of ``word`` as a listing writes it (quoted if need be)."""
    return len(quote(word).encode("utf-8"))


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

    __slots__ = ("id", "owner", "name", "values", "order", "size", "slot", "vers", "removed",
                 "index", "_line")

    def __init__(self, id: int, owner: str, slot: int) -> None:
        self.id = id
        self.owner = owner
        self.name: Optional[str] = None
        self.values: dict[str, str] = {}  # attribute -> value
        self.order: list[str] = []  # attribute names in listing order
        self.size = 0  # UTF-8 bytes of the attributes in ``line``, kept as they change
        self.slot = slot
        self.vers = 0
        self.removed = False
        #: The registry's attribute index while this service is in it (set() keeps it exact).
        self.index: Optional[AttrIndex[Service]] = None
        self._line: Optional[str] = None

    @property
    def attrs(self) -> list[tuple[str, str]]:
        """``(attribute, value)`` pairs in listing order (a copy)."""
        return [(attr, self.values[attr]) for attr in self.order]

    @attrs.setter
    def attrs(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Replace every attribute: ``pairs`` in listing order (a later duplicate wins)."""
        if self.index is not None:
            self.index.remove(self, self.values)
        self.values = {}
        self.order = []
        self.size = 0
        for attr, value in reversed(list(pairs)):  # set() puts each in front: same order
            if attr not in self.values:
                self.set(attr, value)
        self._line = None

    def get(self, attr: str) -> Optional[str]:
        return self.values.get(attr)

    def set(self, attr: str, value: str) -> None:
        """Set one attribute with Inferno's ordering.

        A new attribute goes in front; changing one keeps its place but
        reverses the attributes in front of it (``[x y a z]`` -> ``[y x a z]``).
        """
        self._line = None
        old = self.values.get(attr)
        if self.index is not None:
            self.index.assign(self, attr, old, value)
        if old is not None:
            i = self.order.index(attr)
            self.order[:i] = self.order[i - 1::-1] if i else []
            self.size += _qlen(value) - _qlen(old)
        else:
            self.order.insert(0, attr)
            self.size += 2 + _qlen(attr) + _qlen(value)
        self.values[attr] = value

    def matches(self, pairs: Filter) -> bool:
        values = self.values
        for attr, value in pairs:
            have = values.get(attr)
            if have is None or (value != "*" and have != value):
                return False
        return True

    @property
    def line(self) -> str:
        """This service in ``index`` format, cached until it changes."""
        if self._line is None:
            assert self.name is not None
            self._line = format_service(self.name, {a: self.values[a] for a in self.order})
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

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.version = 0
        self._slots: list[Service] = []
        # Each slot's line ("" unnamed) as of the last listing, but for the
        # services in the index's ``touched``: a full listing is one C join,
        # not a walk through 10,000 scattered Service objects (4x slower).
        self._lines: list[str] = []
        # The lines of each _BLOCK slots joined, None once one of them changed.
        self._blocks: list[Optional[str]] = []
        self._by_id: dict[int, Service] = {}
        self._by_name: dict[str, Service] = {}
        self._index: AttrIndex[Service] = AttrIndex()
        self._next_id = 0
        self._listeners: list[Callable[[int], None]] = []
        # Listings by filter, valid while the index's clock reads _found_at.
        self._found: dict[tuple[tuple[str, str], ...], str] = {}
        self._found_at = -1
        self._found_chars = 0

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
        svc.index = self._index
        self._next_id += 1
        self._slots.append(svc)
        self._lines.append("")
        self._by_id[svc.id] = svc
        return svc

    def get(self, name: str) -> Optional[Service]:
        return self._by_name.get(name)

    def by_id(self, id: int) -> Optional[Service]:
        return self._by_id.get(id)

    def write(self, svc: Service, text: str) -> None:
        """Apply one write to a service file (the first write names it).

        ``RegistryError`` with the registry's text, or the limit's, if refused.
        """
        if svc.removed:
            raise RegistryError(GONE)
        words = unquote(text)
        if not words:
            raise RegistryError("bad syntax")
        name = None
        if svc.name is None:
            name = words.pop(0)
            error = service_name_error(name)
            if error is None and name in self._by_name:
                error = "duplicate service name"
            if error is not None:
                raise RegistryError(error)
        if len(words) % 2:
            if name is not None:
                self._name(svc, name)
            raise RegistryError("odd attribute/value pairs")
        pairs = list(zip(words[0::2], words[1::2]))
        error = self._limit_error(svc, name, pairs)
        if error is not None:
            raise RegistryError(error)
        if name is not None:
            self._name(svc, name)
        for attr, value in pairs:
            svc.set(attr, value)
        svc.vers += 1
        self._changed()

    def _name(self, svc: Service, name: str) -> None:
        svc.name = name
        self._by_name[name] = svc
        self._index.changes += 1  # it is listed from now on
        self._index.touched.add(svc)

    def _limit_error(self, svc: Service, name: Optional[str],
                     pairs: list[tuple[str, str]]) -> Optional[str]:
        """Why applying ``pairs`` (and naming the service ``name``) breaks a limit.

        Costs O(size of the write), not of the service: the service's line
        size and attribute count are kept as it changes. A write may set one
        attribute many times (gateway lines that arrive together are one
        write), so only the values it ends with are checked.
        """
        limits = self.limits
        latest = dict(pairs)  # what each attribute ends up as (the order aside)
        count = len(svc.values) + len(latest.keys() - svc.values.keys())
        if count > limits.attrs:  # first, at C speed: a flood of new attributes costs ~nothing
            return f"{count} attributes, over the limit of {limits.attrs}"
        # From here on at most limits.attrs attributes are looked at.
        error = service_error(name, latest, limits)  # the name, each word's text and size
        if error is not None:
            return error
        named = name if name is not None else svc.name
        size = svc.size + (_qlen(named) + 1 if named is not None else 0)
        for attr, value in latest.items():
            old = svc.values.get(attr)
            size += 2 + _qlen(attr) + _qlen(value) if old is None else _qlen(value) - _qlen(old)
        if size > limits.service_bytes:
            return f"service line is {size} bytes, over the {limits.service_bytes}-byte limit"
        return None

    def add_static(self, name: str, attrs: Iterable[tuple[str, str]], owner: str = "registry") -> bool:
        """Add a persistent service from the static database; False if refused."""
        pairs = list(attrs)
        if (service_name_error(name) is not None or name in self._by_name
                or service_error(name, dict(pairs), self.limits) is not None):
            return False
        svc = self.create(owner)
        self._name(svc, name)
        for attr, value in pairs:
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
        self._index.remove(svc, svc.values)
        self._index.touched.discard(svc)  # held until the next full listing otherwise
        svc.index = None
        del self._by_id[svc.id]
        last = self._slots.pop()
        line = self._lines.pop()
        if last is not svc:
            self._slots[svc.slot] = last
            self._lines[svc.slot] = line
            last.slot = svc.slot
        self._stale(svc.slot)
        self._stale(len(self._slots))  # where the last slot was
        if svc.name is not None:
            del self._by_name[svc.name]
            self._changed()

    # -- listings ------------------------------------------------------------

    def find(self, pairs: Filter) -> str:
        """Every named service matching all pairs (``*`` matches any value), in slot order.

        A registry that did not change since the same filter was last asked
        answers from memory: monitors find again after each event, all at
        once and often with one filter, and a client polls an idle registry.
        Any change of what a listing shows (an attribute, a name, a slot)
        advances the index's clock, which drops every kept listing.
        """
        key = tuple(pairs)
        if self._found_at != self._index.changes:
            self._found = {}
            self._found_at = self._index.changes
            self._found_chars = 0
        text = self._found.get(key)
        if text is None:
            text = self._listing(pairs)
            if len(self._found) >= _CACHED_FINDS or self._found_chars + len(text) > _CACHED_CHARS:
                self._found = {}
                self._found_chars = 0
            self._found[key] = text
            self._found_chars += len(text)
        return text

    def _listing(self, pairs: Filter) -> str:
        """:meth:`find` computed.

        Only named services hold attributes, so a filter's candidates are
        the index's smallest set for one of its pairs: sorted by slot when
        few, else picked out of the slot table in one walk (or, when they
        are every named service, all of it, as one join of the slots' lines).
        Lines are read from each service's cache directly: the property call
        cost more than the rest.
        """
        if pairs:
            candidates = self._index.smallest(pairs)
            if len(candidates) * 3 < len(self._slots):
                chosen: Iterable[Service] = sorted(candidates, key=_SLOT)
            elif len(candidates) < len(self._by_name):
                chosen = [svc for svc in self._slots if svc in candidates]
            elif len(pairs) > 1:
                chosen = self._slots
            else:
                return self._everything()
            if len(pairs) > 1:
                chosen = [svc for svc in chosen if svc.matches(pairs)]
            return "".join([svc._line or svc.line for svc in chosen if svc.name is not None])
        return self._everything()

    def _everything(self) -> str:
        """Every named service's line in slot order: the kept blocks, joined."""
        lines = self._fresh_lines()
        blocks = self._blocks
        count = -(-len(lines) // _BLOCK)
        del blocks[count:]
        blocks.extend([None] * (count - len(blocks)))
        for i, text in enumerate(blocks):
            if text is None:
                blocks[i] = "".join(lines[i * _BLOCK:(i + 1) * _BLOCK])
        return "".join(blocks)  # type: ignore[arg-type]  # none is None now

    def _fresh_lines(self) -> list[str]:
        """Every slot's line ("" unnamed), the touched ones brought up to date."""
        touched = self._index.touched
        if touched:
            lines = self._lines
            for svc in touched:
                if not svc.removed:  # a removed one's slot may be another's now
                    # Named: only named services hold attributes (see _listing).
                    lines[svc.slot] = svc.line
                    self._stale(svc.slot)
            touched.clear()
        return self._lines

    def _stale(self, slot: int) -> None:
        """The block holding ``slot`` must be joined again."""
        block = slot // _BLOCK
        if block < len(self._blocks):
            self._blocks[block] = None

    def index(self) -> str:
        return self.find([])

    def services(self) -> Iterable[Service]:
        """Named services in listing order."""
        return (svc for svc in self._slots if svc.name is not None)
