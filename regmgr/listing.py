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

    Only the stretch of lines between the longest common head and tail of
    two successive texts is split and compared (a registry lists its
    services in a stable order, so one change is one stretch): hashing and
    comparing every line cost about 3 ms at 10,000 services, most of a
    monitor's time under churn.
    """

    def __init__(self) -> None:
        self._text = ""  # the last listing
        self._lines: dict[str, tuple[str, dict[str, str]]] = {}  # line -> (name, attrs)
        self._services: Services = {}

    def reset(self) -> None:
        """Forget the last listing: the next one is parsed and compared whole."""
        self._text = ""
        self._lines = {}
        self._services = {}

    def parse(self, text: str) -> tuple[Services, Optional[list[str]]]:
        first = not self._text
        # A quote may hold a newline, so such a listing has no plain lines.
        if "'" in text or not text.endswith("\n"):
            self.reset()
            return parse_services(text), None
        try:
            if first:
                old_lines: list[str] = []
                new_lines = text.split("\n")
            else:
                start, old_end, new_end = _differing(self._text, text)
                old_lines = self._text[start:old_end].split("\n")
                new_lines = text[start:new_end].split("\n")
            new_lines.pop()  # after the last newline: empty
            if old_lines:
                old_lines.pop()
            changed = self._update(old_lines, new_lines)
        except BaseException:
            self.reset()
            raise
        self._text = text
        return self._services, None if first else changed

    def _update(self, old_lines: list[str], new_lines: list[str]) -> list[str]:
        """Replace ``old_lines`` of the last listing with ``new_lines``."""
        new = set(new_lines)
        if len(new) != len(new_lines):
            parse_services("\n".join(new_lines) + "\n")  # raises: a service listed twice
        old = set(old_lines)
        known = self._lines
        services = self._services
        changed: dict[str, None] = {}  # an ordered set
        for line in old - new:
            name, _ = known.pop(line)
            del services[name]
            changed[name] = None
        added = new - old
        if len(added) > 1:
            added_lines = [line for line in new_lines if line in added]  # listing order
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


#: Characters compared at once while looking for where two listings differ.
_CHUNK = 4096


def _common_head(a: str, b: str, limit: int) -> int:
    """The length of the longest common prefix of ``a`` and ``b``, at most ``limit``."""
    low, step = 0, _CHUNK
    while low < limit:  # whole chunks at C speed, growing, then halving within the first miss
        high = min(limit, low + step)
        if a[low:high] != b[low:high]:
            while high - low > 1:
                middle = (low + high) // 2
                if a[low:middle] == b[low:middle]:
                    low = middle
                else:
                    high = middle
            return low
        low, step = high, step * 2
    return limit


def _common_tail(a: str, b: str, limit: int) -> int:
    """The length of the longest common suffix of ``a`` and ``b``, at most ``limit``."""
    la, lb = len(a), len(b)
    low, step = 0, _CHUNK
    while low < limit:
        high = min(limit, low + step)
        if a[la - high:la - low] != b[lb - high:lb - low]:
            while high - low > 1:
                middle = (low + high) // 2
                if a[la - middle:la - low] == b[lb - middle:lb - low]:
                    low = middle
                else:
                    high = middle
            return low
        low, step = high, step * 2
    return limit


def _differing(old: str, new: str) -> tuple[int, int, int]:
    """``(start, old_end, new_end)``: whole lines, ``old[start:old_end]`` and
    ``new[start:new_end]``, outside which the two listings are the same lines.

    Both texts end with a newline; the head and the tail do not overlap.
    """
    shorter = min(len(old), len(new))
    start = old.rfind("\n", 0, _common_head(old, new, shorter)) + 1  # back to a line start
    tail = _common_tail(old, new, shorter - start)
    old_end, new_end = len(old) - tail, len(new) - tail
    if not (old_end == start or old[old_end - 1] == "\n") or not (
            new_end == start or new[new_end - 1] == "\n"):
        skip = old.index("\n", old_end) + 1 - old_end  # on to the next line start
        old_end += skip
        new_end += skip
    return start, old_end, new_end
