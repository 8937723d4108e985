"""Exceptions raised by regmgr.

Every failure is one of these (or a builtin ``ValueError``/``TypeError`` for
bad arguments, or ``ConnectionError`` for a broken socket), so callers can
catch ``RegmgrError`` for everything the registry itself did.
"""
from __future__ import annotations

__all__ = ["RegmgrError", "ProtocolError", "RegistryError", "AttachError", "TRANSIENT_ERRORS"]


class RegmgrError(Exception):
    """Base class of regmgr's own exceptions."""


class ProtocolError(RegmgrError):
    """The peer sent bytes that do not follow the registry protocol.

    ``data`` holds the offending text (or bytes) so the log shows what came.
    """

    def __init__(self, message: str, data: object = None) -> None:
        super().__init__(message if data is None else f"{message}: {data!r}")
        self.data = data


class RegistryError(RegmgrError):
    """The registry refused an operation; ``str(err)`` is its own error text.

    Examples: ``duplicate service name``, ``bad character in service name``.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class AttachError(RegmgrError):
    """A task was attached twice or detached from a manager it is not on."""


#: What a task retries with backoff after a short log line: the registry is
#: unreachable or the link broke (transports turn every ``OSError``, timeouts
#: included, into ``ConnectionError``), the peer spoke garbage
#: (``ProtocolError``: reconnect), or the registry refused for now
#: (``RegistryError``, e.g. a ``duplicate service name`` whose holder may
#: go away; a session out of fids). Anything else escaping a transport
#: (``ValueError``, ``TypeError``, a raw ``OSError``) is a bug: it is still
#: retried, but logged with its traceback.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (ConnectionError, RegmgrError)
