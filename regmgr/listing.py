"""Successive listings of one find, parsed only where they changed.

A Monitor of N services refreshes on every change anywhere, and each
refresh lists all N again although usually one line differs. Parsing
every line and comparing every service cost about 2 ms at 1,000 services,
most of an update's way to its callback. :class:`ListingParser` keeps the
lines of the last listing: set operations over the raw lines find the
ones that changed, and only those are parsed. The services it returns
keep the attribute dicts of the lines that did not change, so a caller
can tell unchanged services by identity.
"""
from __future__ import annotations

from typing import Optional

from .errors import ProtocolError
from .wire import parse_services

__all__ = ["ListingParser", "Services"]

Services = dict[str, dict[str, str]]


class ListingParser:
    """``parse(text)`` -> ``(services, changed)`` for each listing of one find in turn.

    ``changed`` names every service whose line appeared or disappeared since
    the previous listing, new lines in listing order, or is None when every service must be compared
    (the first listing, one with quoted words, one after an error). The
    ``services`` dict and its attribute dicts belong to the parser: the
    caller reads them and never changes them. A malformed listing raises
    :class:`~regmgr.errors.ProtocolError`, as :func:`~regmgr.wire.parse_services`
    does, and the next listing is parsed whole.
    """

    def __init__(self) -> None:
        self._lines: dict[str, tuple[str, dict[str, str]]] = {}  # line -> (name, attrs)
        self._line_set: set[str] = set()  # the same lines: set operations on sets are fastest
        self._services: Services = {}

    def reset(self) -> None:
        """Forget the last listing: the next one is parsed and compared whole."""
        self._lines = {}
        self._line_set = set()
        self._services = {}

    def parse(self, text: str) -> tuple[Services, Optional[list[str]]]:
        first = not self._lines
        lines = text.split("\n")
        # A quote may hold a newline, so such a listing has no plain lines.
        if "'" in text or lines.pop() != "":
            self.reset()
            return parse_services(text), None
        try:
            changed = self._update(lines)
        except BaseException:
            self.reset()
            raise
        return self._services, None if first else changed

    def _update(self, lines: list[str]) -> list[str]:
        new = set(lines)
        if len(new) != len(lines):
            parse_services("\n".join(lines) + "\n")  # raises: a service listed twice
        known = self._lines
        services = self._services
        changed: dict[str, None] = {}  # an ordered set
        for line in self._line_set - new:
            name, _ = known.pop(line)
            del services[name]
            changed[name] = None
        added = new - self._line_set
        self._line_set = new
        if len(added) > 1:
            added_lines = [line for line in lines if line in added]  # listing order
        else:
            added_lines = list(added)
        for line in added_lines:
            parsed = parse_services(line + "\n")
            if len(parsed) != 1:
                raise ProtocolError("malformed service line", line)
            ((name, attrs),) = parsed.items()
            if name in services:
                raise ProtocolError("service listed twice", line)
            known[line] = (name, attrs)
            services[name] = attrs
            changed[name] = None
        return list(changed)
