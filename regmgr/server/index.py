"""Which services hold an attribute, or an attribute with a value: what a find starts from.

Checking a filter against every service made a find that lists 10% of
10,000 services cost more than listing them all (2.7 ms against 1.2).
:class:`AttrIndex` keeps, for every attribute and value, the services
holding that value, and for every attribute the services holding it with
any value (for ``*``). The registry keeps it exact on every attribute
write and removal, so a find starts from its filter's smallest set.
Every such call also advances :attr:`AttrIndex.changes`, the clock by
which the registry knows a cached listing is still current, and puts the
service in :attr:`AttrIndex.touched`, whose lines the registry refreshes.

A value held by one service (a sequence number, an address) is the
common case and is kept as that service alone, not a set of one: the
index then costs some 150 bytes per such attribute instead of 450.
"""
from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Generic, Optional, TypeVar, Union

__all__ = ["AttrIndex"]

S = TypeVar("S", bound=Hashable)


class AttrIndex(Generic[S]):
    """``attribute -> value -> services`` and ``attribute -> services``, kept by the caller."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, Union[S, set[S]]]] = {}
        self._attrs: dict[str, set[S]] = {}
        #: Advanced by every assign and remove (even one that keeps the value:
        #: Inferno's order quirk still moves attributes); the owner advances
        #: it too when a service starts being listed.
        self.changes = 0
        #: Services assigned or removed since the owner last emptied this.
        self.touched: set[S] = set()

    def assign(self, svc: S, attr: str, old: Optional[str], value: str) -> None:
        """``svc``'s ``attr`` goes from ``old`` (None: absent) to ``value``."""
        self.changes += 1
        self.touched.add(svc)
        if old == value:
            return
        if old is None:
            self._attrs.setdefault(attr, set()).add(svc)
        else:
            self._discard(svc, attr, old)
        values = self._values.setdefault(attr, {})
        members = values.get(value)
        if members is None:
            values[value] = svc
        elif type(members) is set:
            members.add(svc)
        elif members is not svc:
            values[value] = {members, svc}  # type: ignore[arg-type]  # members: one S

    def remove(self, svc: S, values: Mapping[str, str]) -> None:
        """``svc`` no longer holds any of ``values``."""
        self.changes += 1
        self.touched.add(svc)
        for attr, value in values.items():
            self._discard(svc, attr, value)
            holders = self._attrs.get(attr)
            if holders is not None:
                holders.discard(svc)
                if not holders:
                    del self._attrs[attr]

    def _discard(self, svc: S, attr: str, value: str) -> None:
        values = self._values.get(attr)
        if values is None:
            return
        members = values.get(value)
        if type(members) is set:
            members.discard(svc)
            if len(members) == 1:
                values[value] = next(iter(members))
        elif members is svc:
            del values[value]
            if not values:
                del self._values[attr]

    def smallest(self, pairs: Iterable[tuple[str, str]]) -> Collection[S]:
        """The fewest services that include every match of ``pairs`` (``*``: any value).

        That is the services of the pair held by the fewest; empty if a pair
        is held by none. Never changed by the caller.
        """
        best: Optional[Collection[S]] = None
        for attr, value in pairs:
            members: Union[None, S, Collection[S]]
            if value == "*":
                members = self._attrs.get(attr)
            else:
                members = self._values.get(attr, {}).get(value)
                if members is not None and type(members) is not set:
                    members = (members,)  # type: ignore[assignment]  # one S
            if not members:
                return ()
            assert isinstance(members, Collection)
            if best is None or len(members) < len(best):
                best = members
        return best if best is not None else ()
