"""The registry's text format, sans-I/O: strings in, values or errors out.

Every registry file speaks the same text: lines of words separated by blank,
tab or newline, quoted the way Inferno's ``%q`` and ``str->unquoted`` do
(registry4.md §2). A quoted word may contain newlines, so a "line" of
``index`` output can span several physical lines. Both the client and the
embedded server use this module; nothing here touches a socket.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from itertools import repeat
from typing import Optional, Union

from .errors import ProtocolError

__all__ = [
    "RESERVED_NAMES",
    "AttrValue",
    "quote",
    "unquote",
    "format_attrs",
    "format_service",
    "parse_services",
    "record_ends",
    "service_name_error",
    "normalize_attrs",
]

AttrValue = Union[str, int, float]

#: File names of the registry directory; no service may take them.
RESERVED_NAMES = frozenset({"new", "event", "find", "index"})

_SEPARATORS = " \t\n"
_SPLIT = re.compile("[ \t\n]+").split
#: What str.split() also splits ASCII text on, besides the registry's separators.
_OTHER_SPACE = re.compile("[\r\x0b\x0c\x1c-\x1f]").search
_WORD = re.compile(r"[^ \t\n]+")


#: A character that makes a word need quotes: one <= U+0020, or a quote.
_QUOTE_NEEDED = re.compile("[\x00- ']").search


def _needs_quotes(word: str) -> bool:
    return word == "" or _QUOTE_NEEDED(word) is not None


def quote(word: str) -> str:
    """Quote one word as the registry writes it (``%q``).

    A word is wrapped in single quotes when it is empty or contains a
    character <= U+0020 or a ``'``; inside, ``'`` is doubled.
    """
    if not _needs_quotes(word):
        return word
    return "'" + word.replace("'", "''") + "'"


def _unquote_balanced(text: str) -> tuple[list[str], bool]:
    """Inferno's ``str->unquoted`` scan, right to left.

    Returns the words and whether a quote was left open. The scan direction
    matters for odd runs of quotes, so this follows Inferno's own order.
    """
    words: list[str] = []
    inquote = False
    j = len(text)
    while j > 0:
        if text[j - 1] in _SEPARATORS:
            j -= 1
            continue
        word = ""
        i = j - 1
        while i >= 0 and (inquote or text[i] not in _SEPARATORS):
            if text[i] == "'":
                word = text[i + 1:j] + word
                j = i
                if not inquote or i == 0 or text[i - 1] != "'":
                    inquote = not inquote
                else:
                    i -= 1
            i -= 1
        words.append(text[i + 1:j] + word)
        j = i
    words.reverse()
    return words, inquote


def unquote(text: str) -> list[str]:
    """Split ``text`` into words exactly as the registry reads a write.

    Words split on blank, tab and newline only; quotes may start or end
    mid-word; ``''`` inside quotes is one ``'``; an unbalanced quote is
    closed at the end of the input (Inferno appends ``'`` and rescans).
    """
    if "'" not in text:  # the common case, at C speed: a 64 KiB write in ~1 ms, not ~35
        if text.isascii() and not _OTHER_SPACE(text):
            return text.split()  # splits on exactly " \t\n" here
        return [word for word in _SPLIT(text) if word]
    words, open_quote = _unquote_balanced(text)
    while open_quote:
        text += "'"
        words, open_quote = _unquote_balanced(text)
    return words


def record_ends(text: str) -> Iterator[int]:
    """Yield the index just past every newline that lies outside quotes.

    A service line ends at such a newline; a newline inside quotes belongs
    to a value. :func:`parse_services` uses it to cut ``index`` output into
    service lines.
    """
    inquote = False
    for i, c in enumerate(text):
        if c == "'":
            inquote = not inquote  # '' inside quotes toggles twice: no change
        elif c == "\n" and not inquote:
            yield i + 1


def format_attrs(attrs: Mapping[str, str]) -> str:
    """``attr value ...`` with every word quoted; empty for no attributes."""
    return " ".join(f"{quote(k)} {quote(v)}" for k, v in attrs.items())


def format_service(name: str, attrs: Mapping[str, str]) -> str:
    """One service line as the registry lists it, ``\\n``-terminated."""
    if not attrs:
        return quote(name) + "\n"
    return f"{quote(name)} {format_attrs(attrs)}\n"


def parse_services(text: str) -> dict[str, dict[str, str]]:
    """Parse ``index``/``find`` output into ``{name: {attr: value}}``.

    Raises :class:`ProtocolError` with the offending text when the output
    does not end with a newline, has an unterminated quote, a line without
    a name, an odd attribute list or a name listed twice.
    """
    if "'" not in text and "\t" not in text:
        plain = _parse_plain(text)
        if plain is not None:
            return plain
    services: dict[str, dict[str, str]] = {}
    start = 0
    for end in record_ends(text):
        record = text[start:end]
        start = end
        # A line that quotes nothing is just its runs of non-separators.
        words = unquote(record) if "'" in record else _WORD.findall(record)
        if not words or len(words) % 2 == 0:
            raise ProtocolError("malformed service line", record)
        name = words[0]
        if name in services:
            raise ProtocolError("service listed twice", record)
        services[name] = dict(zip(words[1::2], words[2::2]))
    if start != len(text):
        raise ProtocolError("service listing does not end with a newline", text[start:])
    return services


def _parse_plain(text: str) -> Optional[dict[str, dict[str, str]]]:
    """:func:`parse_services` of a listing with no quote and no tab, fast.

    That is how the registry lists services whose words need no quoting,
    one blank between words: then lines and words are plain splits (three
    times faster on a large ``index``). None when the text is not exactly
    that, or is malformed: the general parser then decides.
    """
    lines = text.split("\n")
    if lines.pop() != "":
        return None
    blanks = set(map(str.count, lines, repeat(" ")))
    if len(blanks) == 1:  # what one kind of service lists: then no loop per line
        return _parse_same_width(lines, blanks.pop() + 1)
    return _parse_lines(lines)


def _parse_same_width(lines: list[str], width: int) -> Optional[dict[str, dict[str, str]]]:
    """:func:`_parse_plain` of ``lines`` that all hold ``width`` words.

    The words of all lines are then one list in which each service's name
    and each of its attributes sits at a fixed stride, so slices and C
    loops build every dictionary, not a Python loop per line (a full find
    of 10,000 services: 11-14% less of the finding process's CPU). None if
    a word is empty or a name is listed twice; also for an even ``width``,
    whose last stride comes up one value short.
    """
    words = " ".join(lines).split(" ")
    if "" in words:
        return None
    names = words[::width]
    pairs = [zip(words[i::width], words[i + 1::width]) for i in range(1, width, 2)]
    records = zip(*pairs) if pairs else repeat(())  # () for a name without attributes
    services = dict(zip(names, map(dict, records)))
    if len(services) != len(names):
        return None
    return services


def _parse_lines(lines: list[str]) -> Optional[dict[str, dict[str, str]]]:
    """:func:`_parse_plain` one line at a time, for lines of different widths."""
    services: dict[str, dict[str, str]] = {}
    for line in lines:
        words = line.split(" ")
        if len(words) % 2 == 0 or "" in words:
            return None
        pairs = iter(words)  # no slices: this loop runs for every service listed
        name = next(pairs)
        if name in services:
            return None
        services[name] = dict(zip(pairs, pairs))
    return services


def service_name_error(name: str) -> Optional[str]:
    """The registry's error text for an unusable name, or None if it is fine.

    Uniqueness is the registry's to judge (``duplicate service name``);
    this checks only what the name itself decides.
    """
    if any(c <= " " or c == "/" or c == "\x7f" for c in name):
        return "bad character in service name"
    if name == "" or name in RESERVED_NAMES:
        return "bad service name"
    return None


def normalize_attrs(attrs: Optional[Mapping[str, AttrValue]]) -> dict[str, str]:
    """Check caller-supplied attributes before any I/O and return them as text.

    Names must be ``str``; values ``str`` or numbers (converted with
    ``str``); anything else is a ``TypeError``.
    """
    if attrs is None:
        return {}
    if not isinstance(attrs, Mapping):
        raise TypeError(f"attributes must be a mapping, not {type(attrs).__name__}")
    result: dict[str, str] = {}
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise TypeError(f"attribute name must be str, not {type(key).__name__}: {key!r}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TypeError(
                f"value of attribute {key!r} must be str or a number, not {type(value).__name__}"
            )
        result[key] = value if isinstance(value, str) else str(value)
    return result
