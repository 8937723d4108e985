"""Size limits on what a service may hold, the same in client and server (sans-I/O).

A real Inferno registry takes a registration through the TCP gateway in one
message of up to 64 KiB, and over Styx one write of up to its iounit (8 KiB);
nothing bounds how many attributes a service accumulates. regmgr states its
limits instead, checks them in the client before any I/O (``ValueError``) and
enforces them in ``regmgr serve`` on both frontends, so no client can make a
service grow without bound or stall other clients:

=====================  ========  ==================================================
limit                  default   why this value
=====================  ========  ==================================================
service name           1 KiB     a file name in the registry directory
attribute name         256 B     attribute names are short words
attribute value        4 KiB     one ``attr value`` pair fits one 8 KiB Styx write
attributes / service   128       real services carry a handful
whole service line     32 KiB    quoted ``name attr value ...\\n``: half the gateway's
                                 64 KiB message, so a registration always fits one
=====================  ========  ==================================================

Sizes are UTF-8 bytes of the unquoted text; besides, one quoted ``attr value``
pair must fit one Styx write at the usual msize of 8192 (:data:`PAIR_BYTES`:
only a value of some 2,000 single quotes, each doubled by quoting, reaches it). Text must be valid Unicode that
encodes to UTF-8 (no lone surrogates) and hold no NUL: neither survives the
trip through Inferno's C and Limbo string handling.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from .wire import format_service, quote, service_name_error

__all__ = ["Limits", "DEFAULT_LIMITS", "PAIR_BYTES", "text_error", "service_error",
           "check_service"]

#: Largest quoted ``attr value`` pair: one Styx write at msize 8192 (less its 24-byte header).
PAIR_BYTES = 8192 - 24


@dataclass(frozen=True)
class Limits:
    """Upper bounds on one service; ``regmgr serve`` lets an operator choose others."""

    name_bytes: int = 1024
    attr_name_bytes: int = 256
    value_bytes: int = 4096
    attrs: int = 128
    service_bytes: int = 32 * 1024

    def __post_init__(self) -> None:
        for field, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"limit {field} must be a positive int, not {value!r}")


DEFAULT_LIMITS = Limits()


def text_error(text: str) -> Optional[str]:
    """Why ``text`` cannot travel to a registry (NUL, lone surrogate), or None."""
    if "\x00" in text:
        return "NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"not encodable as UTF-8 ({err.reason} at index {err.start})"
    return None


def _size_error(what: str, text: str, limit: int) -> Optional[str]:
    size = len(text.encode("utf-8"))
    if size > limit:
        return f"{what} is {size} bytes, over the {limit}-byte limit"
    return None


def service_error(name: Optional[str], attrs: Mapping[str, str],
                  limits: Limits = DEFAULT_LIMITS, *, name_rules: bool = True) -> Optional[str]:
    """Why a service ``name`` with ``attrs`` breaks a rule or a limit, or None.

    ``name=None`` checks attributes alone (an update). The name's own rules
    come first, in the registry's wording (``bad character in service name``).
    The whole-line and attribute-count limits apply to what is passed: pass
    the merged attributes to check a service after an update.
    ``name_rules=False`` leaves the name's own rules to the registry to answer
    (a Styx client shows the registry's text) and checks only its text and size.
    """
    if name is not None:
        error = text_error(name)
        if error is not None:
            return f"service name {name!r}: {error}"
        error = ((service_name_error(name) if name_rules else None)
                 or _size_error("service name", name, limits.name_bytes))
        if error is not None:
            return f"{error}: {name[:64]!r}"
    for key, value in attrs.items():
        error = text_error(key)
        if error is not None:
            return f"attribute name {key[:64]!r}: {error}"
        error = text_error(value)
        if error is not None:
            return f"value of attribute {key[:64]!r}: {error}"
        error = (_size_error(f"attribute name {key[:64]!r}", key, limits.attr_name_bytes)
                 or _size_error(f"value of attribute {key[:64]!r}", value, limits.value_bytes))
        if error is None and 2 * (len(key) + len(value)) + 5 > PAIR_BYTES:  # quoting may matter
            error = _size_error(f"attribute {key[:64]!r}, quoted,",
                                f"{quote(key)} {quote(value)}", PAIR_BYTES)
        if error is not None:
            return error
    if len(attrs) > limits.attrs:
        return f"{len(attrs)} attributes, over the limit of {limits.attrs}"
    if name is not None:
        return _size_error("service line", format_service(name, attrs), limits.service_bytes)
    return None


def check_service(name: Optional[str], attrs: Mapping[str, str],
                  limits: Limits = DEFAULT_LIMITS, *, name_rules: bool = True) -> None:
    """Raise ``ValueError`` with :func:`service_error`'s text if there is one (before I/O)."""
    error = service_error(name, attrs, limits, name_rules=name_rules)
    if error is not None:
        raise ValueError(error)
