"""Find the shell commands in reStructuredText files (README.rst, docs/*.rst).

A small line-based reader, enough for the documents' own conventions:

* ``.. code-block:: sh`` (or ``bash``, ``shell``, ``console``) blocks are
  shell commands;
* a ``::`` literal block or a code block whose paragraph says "save this as
  ``FILE`` and run ``COMMAND``" is a file to save and the command that runs it;
* any other ``::`` literal block is shell when its first line starts with a
  command word (:data:`COMMAND_WORDS`), a synopsis when that line also shows
  ``[--option]`` brackets, and not a command otherwise (Python, attrdb...);
* inline literals in prose that start with a command word are commands too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

COMMAND_WORDS = frozenset({"regmgr", "pip", "python", "python3", "gunicorn", "curl", "kill"})
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})

_DIRECTIVE = re.compile(r"^\s*\.\. code-block::\s*(\S+)\s*$")
_SAVE_AND_RUN = re.compile(r"[Ss]ave (?:this |it )?as ``([^`]+)`` and run ``([^`]+)``")
_INLINE = re.compile(r"``([^`]+)``")


@dataclass(frozen=True)
class Block:
    """One literal block: ``kind`` is shell, synopsis, file or other."""

    path: Path
    line: int  # 1-based line of the block's first text line
    kind: str
    text: str
    filename: Optional[str] = None  # kind "file": save the text as this...
    command: Optional[str] = None  # ...and run this

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}"


@dataclass(frozen=True)
class Inline:
    path: Path
    line: int
    text: str


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block_after(lines: list[str], start: int, base: int) -> tuple[int, str]:
    """The literal block after line index ``start`` (indented past ``base``)."""
    i = start + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    first = i
    body = []
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
        body.append(lines[i])
        i += 1
    while body and not body[-1].strip():
        body.pop()
    if not body:
        return first, ""
    cut = min(_indent(line) for line in body if line.strip())
    return first, "\n".join(line[cut:] for line in body) + "\n"


def _paragraph_before(lines: list[str], index: int) -> str:
    start = index
    while start > 0 and lines[start - 1].strip():
        start -= 1
    return " ".join(line.strip() for line in lines[start:index + 1])


def _paragraph_ending_before(lines: list[str], index: int) -> str:
    """The paragraph just above line ``index`` (a directive), or ""."""
    end = index - 1
    while end >= 0 and not lines[end].strip():
        end -= 1
    return _paragraph_before(lines, end) if end >= 0 else ""


def _first_word(text: str) -> str:
    words = text.split()
    return words[0] if words else ""


def _classify(text: str, paragraph: str) -> tuple[str, Optional[str], Optional[str]]:
    saved = _SAVE_AND_RUN.search(paragraph)
    if saved:
        return "file", saved.group(1), saved.group(2)
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if _first_word(first) in COMMAND_WORDS:
        return ("synopsis" if re.search(r"\[-", first) else "shell"), None, None
    return "other", None, None


def blocks(paths: Iterable[Path]) -> list[Block]:
    """Every literal block of ``paths``, classified."""
    found = []
    for path in paths:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            directive = _DIRECTIVE.match(line)
            if directive:
                first, text = _block_after(lines, i, _indent(line))
                if directive.group(1) in SHELL_LANGUAGES:
                    found.append(Block(Path(path), first + 1, "shell", text))
                    continue
                saved = _SAVE_AND_RUN.search(_paragraph_ending_before(lines, i))
                if saved:
                    found.append(Block(Path(path), first + 1, "file", text,
                                       saved.group(1), saved.group(2)))
                else:
                    found.append(Block(Path(path), first + 1, "other", text))
            elif line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
                first, text = _block_after(lines, i, _indent(line))
                if text:
                    kind, filename, command = _classify(text, _paragraph_before(lines, i))
                    found.append(Block(Path(path), first + 1, kind, text, filename, command))
    return found


def inline_commands(paths: Iterable[Path]) -> list[Inline]:
    """Inline literals in prose that start with a command word, e.g. ``regmgr serve``."""
    found = []
    for path in paths:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        in_block = False
        base = 0
        for i, line in enumerate(lines):
            if in_block:
                if line.strip() and _indent(line) <= base:
                    in_block = False
                else:
                    continue
            if _DIRECTIVE.match(line) or (line.rstrip().endswith("::")
                                          and not line.lstrip().startswith("..")):
                in_block, base = True, _indent(line)
            # An inline literal may wrap: join with the next line to find it.
            text = line if i + 1 >= len(lines) else line + " " + lines[i + 1].strip()
            for match in _INLINE.finditer(text):
                if match.start() >= len(line):
                    break
                if _first_word(match.group(1)) in COMMAND_WORDS:
                    found.append(Inline(Path(path), i + 1, match.group(1)))
    return found


def command_of(line: str) -> str:
    """A shell line without its trailing comment (a ``#`` after a blank, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()
