"""Load the static attrdb(6) file of ``ndb/registry -f`` (registry4.md §8).

Each entry with ``service=NAME`` becomes a persistent service owned by
``registry``; its other ``attr=value`` pairs are its attributes. Entries
start at column 0, continuation lines are indented, ``#`` starts a comment
and values may be quoted ``'...'`` (``''`` inside is one quote).
"""
from __future__ import annotations

import logging
import os
from typing import Union

from ..errors import RegmgrError
from .store import Store

log = logging.getLogger("regmgr.server")

__all__ = ["DatabaseError", "parse_db", "load_db"]

Entry = list[tuple[str, str]]


class DatabaseError(RegmgrError):
    """The static database file is malformed; the message names the line."""


def _pairs(line: str, where: str) -> Entry:
    """Split one attrdb line into ``(attr, value)`` pairs."""
    pairs: Entry = []
    i, n = 0, len(line)
    while i < n:
        if line[i] in " \t\r":
            i += 1
            continue
        if line[i] == "#":
            break
        start = i
        while i < n and line[i] not in " \t\r=#":
            i += 1
        attr = line[start:i]
        if not attr:
            raise DatabaseError(f"{where}: '=' without an attribute name")
        value = ""
        if i < n and line[i] == "=":
            i += 1
            if i < n and line[i] == "'":
                i += 1
                chars = []
                while True:
                    if i >= n:
                        raise DatabaseError(f"{where}: unterminated quote in value of {attr!r}")
                    if line[i] == "'":
                        if i + 1 < n and line[i + 1] == "'":
                            chars.append("'")
                            i += 2
                            continue
                        i += 1
                        break
                    chars.append(line[i])
                    i += 1
                value = "".join(chars)
            else:
                start = i
                while i < n and line[i] not in " \t\r#":
                    i += 1
                value = line[start:i]
        pairs.append((attr, value))
    return pairs


def parse_db(text: str, filename: str = "<db>") -> list[Entry]:
    """Every entry of an attrdb text as a list of ``(attr, value)`` pairs."""
    entries: list[Entry] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{filename}:{lineno}"
        pairs = _pairs(line, where)
        if not pairs:
            continue
        if line[0] in " \t":
            if not entries:
                raise DatabaseError(f"{where}: continuation line before any entry")
            entries[-1].extend(pairs)
        else:
            entries.append(pairs)
    return entries


def load_db(registry: Store, path: Union[str, os.PathLike]) -> int:
    """Add every ``service=`` entry of ``path`` to ``registry``; return how many.

    As in Inferno, an entry whose name the registry would refuse (bad or
    duplicate) is skipped; it is logged so the operator sees why.
    """
    filename = os.fspath(path)
    try:
        with open(filename, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise DatabaseError(f"can't open {filename}: {err}") from err
    count = 0
    for entry in parse_db(text, filename):
        names = [value for attr, value in entry if attr == "service"]
        if not names:
            continue
        attrs = [(attr, value) for attr, value in entry if attr != "service"]
        if registry.add_static(names[0], attrs):
            count += 1
        else:
            log.warning("%s: service %r refused (bad or duplicate name, or over a limit), skipped", filename, names[0])
    return count
