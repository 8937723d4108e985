"""regmgr: keep a gevent program connected to an Inferno OS registry(4).

    from regmgr import RegMgr, TCP, Service, Monitor

    mgr = RegMgr(TCP("127.0.0.1"))
    mgr.attach(Service("tcp!10.0.0.5!8080", {"proto": "http"}))
    mgr.attach(Monitor({"proto": "http"}, on_add=print, on_del=print))

Services stay registered, and monitors stay current, through registry
restarts and network outages.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .backoff import Backoff
from .connections import TCP, Styx
from .errors import AttachError, ProtocolError, RegistryError, RegmgrError
from .manager import RegMgr
from .tasks import Lookup, Monitor, Service

try:
    __version__ = version("regmgr")  # single source: setup.cfg's version, as installed
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

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
