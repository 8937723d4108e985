"""regmgr: keep a gevent program connected to an Inferno OS registry(4).

    from regmgr import RegMgr, TCP, Service, Monitor

    mgr = RegMgr(TCP("127.0.0.1"))
    mgr.attach(Service("tcp!10.0.0.5!8080", {"proto": "http"}))
    mgr.attach(Monitor({"proto": "http"}, on_add=print, on_del=print))

Services stay registered, and monitors stay current, through registry
restarts and network outages.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import AttachError, ProtocolError, RegistryError, RegmgrError

if TYPE_CHECKING:
    from .backoff import Backoff
    from .connections import TCP, Styx
    from .manager import RegMgr
    from .tasks import Lookup, Monitor, Service

    __version__: str

__all__ = [
    "__version__",
    "RegMgr",
    "Backoff",
    "Service",
    "Lookup",
    "Monitor",
    "TCP",
    "Styx",
    "RegmgrError",
    "ProtocolError",
    "RegistryError",
    "AttachError",
]

# The client API is imported on first use, and the version looked up on first
# use: ``regmgr serve`` (``regmgr.server``) needs neither, and a registry that
# restarts should listen as soon as it can (importlib.metadata alone costs
# tens of milliseconds).
_LAZY = {"Backoff": ".backoff", "TCP": ".connections", "Styx": ".connections",
         "RegMgr": ".manager", "Lookup": ".tasks", "Monitor": ".tasks", "Service": ".tasks"}


def _installed_version() -> str:
    """setup.cfg's version, as installed (the single source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("regmgr")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


if not TYPE_CHECKING:  # mypy sees the imports above, not a catch-all __getattr__
    def __getattr__(name: str) -> Any:
        if name == "__version__":
            value = _installed_version()
        elif name in _LAZY:
            value = getattr(import_module(_LAZY[name], __name__), name)
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
