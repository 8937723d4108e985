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

from collections.abc import Callable
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

    A registry lists its services in a stable order, so two successive
    texts are mostly the same runs of lines: those are skipped by comparing
    whole chunks at C speed, and only the lines where they differ are
    split, hashed and compared (see :func:`_changed_lines`). Doing that for
    every line cost about 1.5 ms per refresh at 10,000 services, most of a
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
                new_lines.pop()  # after the last newline: empty
            else:
                old_lines, new_lines = _changed_lines(self._text, text)
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


#: Characters compared at first, and at most at once, while looking for where two
#: listings differ (the step doubles while they agree).
_FIRST = 64
_LARGEST = 65536
#: Changed lines in a row, right after one another, before the rest of the
#: stretch is compared whole (the listings no longer line up: a service came or went).
_MISSES = 8


def _longest_agreement(agree: Callable[[int, int], bool], limit: int) -> int:
    """The largest ``n <= limit`` such that ``agree(0, n)``, given that ``agree(low, high)``
    says whether characters ``low`` to ``high`` of the two texts compared are the same."""
    low, step = 0, _FIRST
    while low < limit:  # chunks at C speed, growing, then halving within the first miss
        high = min(limit, low + step)
        if not agree(low, high):
            while high - low > 1:
                middle = (low + high) // 2
                if agree(low, middle):
                    low = middle
                else:
                    high = middle
            return low
        low, step = high, min(step * 2, _LARGEST)
    return limit


def _common_run(a: str, i: int, b: str, j: int, limit: int) -> int:
    """How many characters ``a[i:]`` and ``b[j:]`` have in common at their start, at most ``limit``."""
    return _longest_agreement(lambda lo, hi: a[i + lo:i + hi] == b[j + lo:j + hi], limit)


def _common_tail(a: str, b: str, limit: int) -> int:
    """The length of the longest common suffix of ``a`` and ``b``, at most ``limit``."""
    la, lb = len(a), len(b)
    return _longest_agreement(lambda lo, hi: a[la - hi:la - lo] == b[lb - hi:lb - lo], limit)


def _changed_lines(old: str, new: str) -> tuple[list[str], list[str]]:
    """Lines of ``old`` and of ``new`` (both newline-terminated) among which are all
    that differ: outside them the two texts are the same lines, in the same places.

    Runs the texts have in common are skipped; each line where they part is
    taken from both, and the walk goes on after them (a service changed in
    place). When they keep differing line after line (a service came or
    went, and everything after it moved), the rest is taken whole. The
    lines taken may hold unchanged ones (in both lists): the caller compares
    them as sets.
    """
    shorter = min(len(old), len(new))
    tail = _common_tail(old, new, shorter)
    old_end, new_end = len(old) - tail, len(new) - tail
    if not ((old_end == 0 or old[old_end - 1] == "\n")
            and (new_end == 0 or new[new_end - 1] == "\n")):
        skip = old.index("\n", old_end) + 1 - old_end  # the tail starts at a line start
        old_end += skip
        new_end += skip
    removed: list[str] = []
    added: list[str] = []
    i = j = misses = 0
    while i < old_end and j < new_end and misses < _MISSES:
        run = _common_run(old, i, new, j, min(old_end - i, new_end - j))
        cut = old.rfind("\n", i, i + run) + 1 or i  # the start of the line where they part
        j += cut - i
        misses = 0 if cut > i else misses + 1
        i = cut
        if i >= old_end or j >= new_end:
            break
        old_next = old.index("\n", i) + 1
        new_next = new.index("\n", j) + 1
        removed.append(old[i:old_next - 1])
        added.append(new[j:new_next - 1])
        i, j = old_next, new_next
    if i < old_end:
        removed += old[i:old_end - 1].split("\n")
    if j < new_end:
        added += new[j:new_end - 1].split("\n")
    return removed, added
