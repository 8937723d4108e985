"""One find shared by the many greenlets that ask "is my service listed?" at once.

N registrations being confirmed together, or N services checking after an
event that the registry still lists them, would otherwise each fetch and
parse a listing: O(N^2) work when the N services share their attributes
(1,000 such registrations took 9.5 s over TCP). A :class:`SharedListing`
runs one find at a time; every caller that asks meanwhile waits for the
next one, whose filter is what all their attributes have in common, so
that listing shows every one of their services and, when they share
attributes, little else.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Optional, Union

import gevent
from gevent.event import AsyncResult

__all__ = ["SharedListing"]

Services = dict[str, dict[str, str]]
Find = Callable[[Mapping[str, str]], Services]


class _Round:
    """The callers waiting for the next find, and the filter they have in common."""

    __slots__ = ("filter", "result")

    def __init__(self, attrs: Mapping[str, str]) -> None:
        self.filter = dict(attrs)
        self.result = AsyncResult()

    def narrow(self, attrs: Mapping[str, str]) -> None:
        self.filter = {k: v for k, v in self.filter.items() if attrs.get(k) == v}


class SharedListing:
    """``listing(find, attrs)``: a listing holding every service that ``find(attrs)`` lists.

    It may hold more (it answers several callers) and is shared, so callers
    only look names up in it and never change it. It always comes from a
    find started after the call; that find's error reaches all its callers.
    All callers of one instance pass the same ``find`` (one connection's).
    ``gather``, if given, is called before each find: it blocks (briefly)
    while more callers are known to be on their way.
    """

    def __init__(self, gather: Optional[Callable[[], object]] = None) -> None:
        self._gathering: Optional[_Round] = None
        self._running = False
        self._gather = gather

    def __call__(self, find: Find, attrs: Mapping[str, str]) -> Services:
        round_ = self._gathering
        if round_ is None:
            round_ = self._gathering = _Round(attrs)
            if not self._running:
                self._running = True
                gevent.spawn(self._run, find)
        else:
            round_.narrow(attrs)
        outcome: Union[Services, Exception] = round_.result.get()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _run(self, find: Find) -> None:
        """One find per round, until no caller waits for another."""
        try:
            while self._gathering is not None:
                if self._gather is not None:
                    self._gather()
                round_, self._gathering = self._gathering, None  # later callers: next round
                try:
                    outcome: Union[Services, Exception] = find(round_.filter)
                except Exception as err:
                    outcome = err
                # Not set_exception(): it pickles the traceback, and importing
                # pickle fails when out of file descriptors; the waiters would hang.
                round_.result.set(outcome)
        finally:
            self._running = False
