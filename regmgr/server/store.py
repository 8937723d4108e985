"""Where the registry's truth lives: one interface, two implementations.

The frontends (TCP gateway, Styx) talk to a :class:`Store`: the surface of
:class:`~regmgr.server.state.Registry` they already use, plus whether the
store can serve clients now. :class:`MemoryStore` is today's in-process
registry, unchanged; :class:`~regmgr.server.zookeeper.ZooKeeperStore` keeps
the truth in a ZooKeeper ensemble and serves reads from an in-memory mirror.
:func:`open_store` picks one from ``regmgr serve --store URL``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Optional, Protocol
from urllib.parse import urlsplit

from ..errors import RegmgrError
from ..limits import DEFAULT_LIMITS, Limits
from .state import Filter, Registry, Service, Watcher

__all__ = ["Store", "ManagedStore", "MemoryStore", "StoreError", "open_store"]

#: ``fn(serving)``: called when a store stops (False) or starts again (True)
#: being able to serve; a frontend closes every client on False.
ServingListener = Callable[[bool], None]


class StoreError(RegmgrError):
    """A store that cannot be opened or reached (bad ``--store`` URL, no ensemble)."""


class Store(Protocol):
    """What a frontend needs from the registry it serves: the surface of
    :class:`Registry`, which is itself a Store."""

    version: int

    def subscribe(self, listener: Callable[[int], None]) -> None: ...
    def unsubscribe(self, listener: Callable[[int], None]) -> None: ...
    def watch(self) -> Watcher: ...
    def __len__(self) -> int: ...
    def create(self, owner: str) -> Service: ...
    def get(self, name: str) -> Optional[Service]: ...
    def by_id(self, id: int) -> Optional[Service]: ...
    def write(self, svc: Service, text: str) -> None: ...
    def add_static(self, name: str, attrs: Iterable[tuple[str, str]],
                   owner: str = "registry") -> bool: ...
    def release(self, svc: Service, *, force: bool = False) -> None: ...
    def remove(self, svc: Service, user: str) -> None: ...
    def find(self, pairs: Filter) -> str: ...
    def index(self) -> str: ...
    def services(self) -> Iterable[Service]: ...


class ManagedStore(Store, Protocol):
    """A Store with a lifetime: what :class:`EmbeddedRegistry` starts and watches."""

    @property
    def serving(self) -> bool:
        """False while the store cannot stand behind its registrations: the
        frontends are closed (clients dropped, new ones refused) meanwhile."""

    def add_serving_listener(self, listener: ServingListener) -> None: ...
    def remove_serving_listener(self, listener: ServingListener) -> None: ...
    def start(self) -> None: ...
    def close(self) -> None: ...


class MemoryStore(Registry):
    """The registry in this process only: always serving, nothing to start."""

    @property
    def serving(self) -> bool:
        return True

    def add_serving_listener(self, listener: ServingListener) -> None:
        pass  # never changes

    def remove_serving_listener(self, listener: ServingListener) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


def open_store(url: Optional[str] = None, *, limits: Limits = DEFAULT_LIMITS,
               session_timeout: float = 5.0) -> ManagedStore:
    """A store for ``url``: None or ``memory:`` (default), or
    ``zookeeper://host:port[,host:port...][/root]``.

    The ZooKeeper store needs the ``zookeeper`` extra (kazoo); it is not
    started here.
    """
    if url is None or url in ("memory", "memory:", "memory://"):
        return MemoryStore(limits)
    parts = urlsplit(url)
    if parts.scheme != "zookeeper":
        raise StoreError(f"unknown store {url!r}: use memory: or zookeeper://host:port,.../root")
    if not parts.netloc:
        raise StoreError(f"no ZooKeeper hosts in {url!r}")
    try:
        from .zookeeper import ZooKeeperStore
    except ImportError as err:
        raise StoreError(str(err)) from err
    return ZooKeeperStore(parts.netloc, parts.path or "/regmgr", limits=limits,
                          session_timeout=session_timeout)
