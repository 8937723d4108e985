"""A registry replicated by a ZooKeeper ensemble, served from a local mirror.

Several ``regmgr serve --store zookeeper://...`` frontends are one registry:

* **Writes go to ZooKeeper**, which decides them atomically. A service is
  the node ``<root>/services/<key>``; its data is the owner's name on the
  first line, then the service line in ``index`` format, so Inferno's
  attribute order and quoting travel as text. A name is unique because a
  second ``create`` of a node fails (``duplicate service name``).
* **Lifetime as registry(4) says:** a service is an *ephemeral* node of this
  frontend's ZooKeeper session, and is deleted when its connection closes;
  a ``persist`` service is a *persistent* node (a write that changes
  ``persist`` swaps the node's kind in one transaction), so it outlives its
  connection and its frontend, and only its owner removes it.
* **Reads come from memory.** This class *is* a :class:`Registry`: the
  mirror, fed by a :class:`kazoo.recipe.cache.TreeCache` on the services
  node, so ``find``, ``index`` and ``event`` cost what they cost in the
  memory store. Every change seen (from any frontend) bumps this frontend's
  own version, so events fire everywhere and only grow. A frontend's own
  write is applied to its mirror as soon as ZooKeeper confirms it (a find
  right after a registration sees it); a watch event older than what the
  mirror holds (by creation and modification zxid) is ignored.

Faults:

* the connection to the ensemble is lost (*suspended*, the session may
  live): reads are served from the mirror as it stands; writes are held
  until kazoo reconnects, at most ``write_timeout`` seconds (default: the
  session timeout), then refused with ``registry store unavailable``.
* the session *expires*: its ephemeral nodes are gone, so the store stops
  :attr:`serving`; its listeners (the frontends) close every client and
  refuse new ones until a new session has resynchronised the mirror.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Optional
from urllib.parse import quote

import gevent
from gevent.event import Event

from ..errors import RegistryError
from ..limits import DEFAULT_LIMITS, Limits, service_error
from ..wire import format_service, service_name_error, unquote
from .state import GONE, Filter, Registry, Service, persist_value
from .store import StoreError

try:
    from kazoo.client import KazooClient, KazooState
    from kazoo.exceptions import (
        BadVersionError, ConnectionClosedError, ConnectionLoss, NodeExistsError,
        NoNodeError, SessionExpiredError,
    )
    from kazoo.handlers.gevent import SequentialGeventHandler
    from kazoo.recipe.cache import TreeCache, TreeEvent
    from kazoo.retry import KazooRetry
except ImportError as err:  # pragma: no cover - depends on the extra
    raise ImportError("the ZooKeeper store needs kazoo: pip install 'regmgr[zookeeper]'") from err

log = logging.getLogger("regmgr.server")

__all__ = ["ZooKeeperStore", "UNAVAILABLE", "node_key"]

#: Error text of a write the ensemble could not take in time.
UNAVAILABLE = "registry store unavailable"
_RETRIES = 8
_TOMBS = 10_000  # incarnations remembered as gone, at most


class _Node(NamedTuple):
    """What the mirror knows of one service's node."""

    czxid: int  # the node's incarnation
    mzxid: int  # its last write
    version: int  # for conditional writes
    session: int  # ephemeral owner, 0 if persistent

    @classmethod
    def of(cls, stat: Any) -> "_Node":
        return cls(stat.czxid, stat.mzxid, stat.version, stat.ephemeralOwner)


def node_key(name: str) -> str:
    """The node name of a service: percent-encoded, so ``.``, ``..`` and any
    character ZooKeeper refuses in a path are fine."""
    return "s" + quote(name, safe="")


def _encode(owner: str, name: str, attrs: list[tuple[str, str]]) -> bytes:
    return f"{owner}\n{format_service(name, dict(attrs))}".encode("utf-8")


def _decode(data: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    owner, _, line = data.decode("utf-8", "replace").partition("\n")
    words = unquote(line)
    return owner, words[0], list(zip(words[1::2], words[2::2]))


def _apply(attrs: list[tuple[str, str]], pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``attrs`` after a write of ``pairs``, in Inferno's order."""
    scratch = Service(0, "", 0)
    for attr, value in reversed(attrs):  # set() puts each in front: same order
        scratch.set(attr, value)
    for attr, value in pairs:
        scratch.set(attr, value)
    return scratch.attrs


def _persistent(attrs: list[tuple[str, str]]) -> bool:
    return persist_value(dict(attrs).get("persist")) != 0


class ZooKeeperStore(Registry):
    """The registry under ``root`` of the ensemble at ``hosts`` (kazoo's syntax)."""

    def __init__(
        self,
        hosts: str,
        root: str = "/regmgr",
        *,
        limits: Limits = DEFAULT_LIMITS,
        session_timeout: float = 5.0,
        write_timeout: Optional[float] = None,
        connect_timeout: float = 15.0,
    ) -> None:
        super().__init__(limits)
        self.hosts = hosts
        self.root = "/" + root.strip("/")
        self.session_timeout = session_timeout
        self.write_timeout = write_timeout if write_timeout is not None else session_timeout
        self.connect_timeout = connect_timeout
        self._services = f"{self.root}/services"
        self._nodes: dict[str, _Node] = {}
        self._serving = False
        self._initialized = Event()
        self._serving_listeners: list[Callable[[bool], None]] = []
        self._undone: list[tuple[str, int]] = []  # (path, czxid) whose delete must be retried
        self._tombs: dict[str, int] = {}  # name -> czxid of its last incarnation dropped here
        self._deleting: dict[str, Event] = {}  # path -> set once its delete is done
        self._in_flight: set[Event] = set()  # one per write waiting for ZooKeeper
        self._writers: dict[str, gevent.Greenlet] = {}  # name -> its write-behind greenlet
        self._behind: dict[str, list[tuple[str, str]]] = {}  # name -> pairs not yet written
        #: name -> the last change seen from the watch while its writer ran
        self._missed: dict[str, tuple[str, list[tuple[str, str]], _Node]] = {}
        handler = SequentialGeventHandler()
        retry = KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=1.0,
                           sleep_func=handler.sleep_func)
        self._zk = KazooClient(hosts=hosts, timeout=session_timeout, handler=handler,
                               connection_retry=retry)
        self._zk.add_listener(self._on_state)
        self._cache: Optional[TreeCache] = None

    # -- lifetime --------------------------------------------------------------

    def start(self) -> None:
        """Connect, load the mirror; :class:`StoreError` if the ensemble does not answer."""
        try:
            self._zk.start(timeout=self.connect_timeout)
            self._zk.ensure_path(self._services)
        except (Exception, self._zk.handler.timeout_exception) as err:
            self._zk.stop()
            raise StoreError(f"cannot reach ZooKeeper at {self.hosts}: {err}") from err
        self._cache = TreeCache(self._zk, self._services)
        self._cache.listen(self._on_tree)
        self._cache.listen_fault(lambda err: log.error("zookeeper mirror: %r", err))
        self._cache.start()
        if not self._initialized.wait(self.connect_timeout):
            self.close()
            raise StoreError(f"ZooKeeper at {self.hosts}: mirror not loaded in "
                               f"{self.connect_timeout} s")
        log.info("zookeeper store %s%s: session 0x%x, %d services",
                 self.hosts, self.root, self.session_id, len(self))

    def close(self) -> None:
        """End the session: this frontend's ephemeral services go at once."""
        self._serving = False
        self._serving_listeners.clear()
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        self._zk.stop()
        self._zk.close()

    @property
    def session_id(self) -> int:
        client_id = self._zk.client_id
        return client_id[0] if client_id else 0

    @property
    def client_id(self) -> Optional[tuple[int, bytes]]:
        """kazoo's ``(session id, password)``; tests use it to expire the session."""
        return self._zk.client_id

    # -- serving state -----------------------------------------------------------

    @property
    def serving(self) -> bool:
        return self._serving

    def add_serving_listener(self, listener: Callable[[bool], None]) -> None:
        self._serving_listeners.append(listener)

    def remove_serving_listener(self, listener: Callable[[bool], None]) -> None:
        self._serving_listeners.remove(listener)

    def _set_serving(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        log.warning("zookeeper store: %s", "serving" if serving else
                    "session lost, closing every client until a new session")
        for listener in list(self._serving_listeners):
            try:
                listener(serving)
            except Exception:
                log.exception("serving listener %r failed", listener)

    def _on_state(self, state: str) -> None:
        """kazoo's state listener: must not block."""
        log.info("zookeeper connection: %s", state)
        if state == KazooState.LOST:
            self._initialized.clear()
            gevent.spawn(self._set_serving, False)
        elif state == KazooState.CONNECTED and self._undone:
            gevent.spawn(self._retry_deletes)

    # -- the mirror ----------------------------------------------------------------

    def _on_tree(self, event: Any) -> None:
        if event.event_type == TreeEvent.INITIALIZED:
            self._initialized.set()
            self._set_serving(True)
            return
        if event.event_type not in (TreeEvent.NODE_ADDED, TreeEvent.NODE_UPDATED,
                                    TreeEvent.NODE_REMOVED):
            return
        data = event.event_data
        if data is None or data.path == self._services or not data.data:
            return
        try:
            owner, name, attrs = _decode(data.data)
        except (IndexError, UnicodeDecodeError):
            log.warning("zookeeper mirror: %s holds no service, ignored", data.path)
            return
        node = _Node.of(data.stat)
        if event.event_type == TreeEvent.NODE_REMOVED:
            if self._tombs.get(name) == node.czxid:
                del self._tombs[name]
            have = self._nodes.get(name)
            if have is not None and have.czxid == node.czxid and (svc := self.get(name)):
                self._forget(svc)
        elif name in self._writers:
            self._missed[name] = (owner, attrs, node)  # its writer applies it when done
        else:
            self._upsert(name, owner, attrs, node)

    def _upsert(self, name: str, owner: str, attrs: list[tuple[str, str]], node: _Node,
                svc: Optional[Service] = None) -> None:
        """Make the mirror hold ``node``, unless it already holds that or newer."""
        tomb = self._tombs.get(name)
        if tomb is not None:
            if node.czxid <= tomb:
                return  # an incarnation already gone
            del self._tombs[name]
        have = self.get(name)
        old = self._nodes.get(name)
        if have is not None and old is not None:
            if (node.czxid, node.mzxid) <= (old.czxid, old.mzxid):
                return
            if node.czxid != old.czxid:
                self._forget(have)  # a stale incarnation of the name
                have = None
        if have is None:
            have = svc if svc is not None and not svc.removed else self.create(owner)
        self._name(have, name)
        have.attrs = attrs  # replaces all, in this order (and drops the cached line)
        have.vers += 1
        self._nodes[name] = node
        self._changed()

    def _forget(self, svc: Service) -> None:
        if svc.name is not None:
            node = self._nodes.pop(svc.name, None)
            if node is not None:
                # The watch may still report this incarnation's creation or
                # writes: they must not bring it back.
                self._tombs[svc.name] = node.czxid
                if len(self._tombs) > _TOMBS:
                    del self._tombs[next(iter(self._tombs))]
        if not svc.removed:
            self._drop(svc)

    def _path(self, name: str) -> str:
        return f"{self._services}/{node_key(name)}"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(...)``, retried on a lost connection for up to
        ``write_timeout`` s (kazoo moves to another server), else ``UNAVAILABLE``."""
        value, _ = self._retried(lambda: getattr(self._zk, method + "_async")(*args, **kwargs))
        return value

    def _retried(self, call: Callable[[], Any],
                 abandon: Optional[Callable[[Any], None]] = None) -> tuple[Any, bool]:
        """The value of ``call()``'s async result and whether it took a retry
        (so a create may meet its own node); ``abandon`` gets a result given up on."""
        deadline = time.monotonic() + self.write_timeout
        retried = False
        while True:
            result = call()
            result.wait(max(0.0, deadline - time.monotonic()))
            if not result.ready():
                log.warning("zookeeper: no answer in %s s", self.write_timeout)
                if abandon is not None:
                    result.rawlink(abandon)
                raise RegistryError(UNAVAILABLE)
            try:
                return result.get(block=False), retried
            except ConnectionLoss:
                if time.monotonic() >= deadline:
                    raise RegistryError(UNAVAILABLE) from None
                retried = True
                gevent.sleep(0.05)
            except (SessionExpiredError, ConnectionClosedError) as err:
                log.warning("zookeeper: %s", err or type(err).__name__)
                raise RegistryError(UNAVAILABLE) from None

    # -- reads -----------------------------------------------------------------------

    def find(self, pairs: Filter) -> str:
        """From the mirror, once the writes this frontend already took are decided.

        In memory a write is applied when it arrives, so a find sent after a
        registration (on another connection) sees it, or sees it refused;
        clients confirm registrations that way. Here a write waits for
        ZooKeeper: a find waits for the writes in flight when it came (at
        most ``write_timeout``), so the order is kept.
        """
        pending = list(self._in_flight)
        if pending:
            deadline = time.monotonic() + self.write_timeout
            for done in pending:
                done.wait(max(0.0, deadline - time.monotonic()))
        return super().find(pairs)

    # -- writes ----------------------------------------------------------------------

    def write(self, svc: Service, text: str) -> None:
        """One write to a service file: the first names it (creates its node)."""
        done = Event()
        self._in_flight.add(done)
        try:
            self._write(svc, text)
        finally:
            self._in_flight.discard(done)
            done.set()

    def _write(self, svc: Service, text: str) -> None:
        if svc.removed:
            raise RegistryError(GONE)
        words = unquote(text)
        if not words:
            raise RegistryError("bad syntax")
        if svc.name is None:
            name = words.pop(0)
            error = service_name_error(name)
            if error is not None:
                raise RegistryError(error)
            if len(words) % 2:
                self._create(svc, name, [])  # named although the write fails, as in Inferno
                raise RegistryError("odd attribute/value pairs")
            pairs = list(zip(words[0::2], words[1::2]))
            error = self._limit_error(svc, name, pairs)
            if error is not None:
                raise RegistryError(error)
            self._create(svc, name, _apply([], pairs))
            return
        if len(words) % 2:
            raise RegistryError("odd attribute/value pairs")
        pairs = list(zip(words[0::2], words[1::2]))
        error = self._limit_error(svc, None, pairs)
        if error is not None:
            raise RegistryError(error)
        self._update(svc, pairs)

    def _create(self, svc: Service, name: str, attrs: list[tuple[str, str]]) -> None:
        path, data = self._path(name), _encode(svc.owner, name, attrs)
        deleting = self._deleting.get(path)
        if deleting is not None:  # this frontend's own release of the name, on its way
            deleting.wait(self.write_timeout)
        ephemeral = not _persistent(attrs)

        def abandon(done: Any) -> None:  # given up on but applied later: nobody's node
            if done.successful():
                self._delete_later(path, done.value[1].czxid)

        attempts = []

        def create() -> Any:
            attempts.append(1)
            return self._zk.create_async(path, data, ephemeral=ephemeral, include_data=True)

        try:
            (_, stat), _ = self._retried(create, abandon)
        except NodeExistsError:
            stat = self._own_node(path, data, ephemeral) if len(attempts) > 1 else None
            if stat is None:
                raise RegistryError("duplicate service name") from None
        self._upsert(name, svc.owner, attrs, _Node.of(stat), svc)

    def _own_node(self, path: str, data: bytes, ephemeral: bool) -> Any:
        """After a create retried on a lost connection: the node's stat if the
        first attempt made it (our data, and our session's if ephemeral)."""
        try:
            have, stat = self._call("get", path)
        except NoNodeError:
            return None
        mine = stat.ephemeralOwner == self.session_id if ephemeral else stat.ephemeralOwner == 0
        return stat if mine and have == data else None

    def _update(self, svc: Service, pairs: list[tuple[str, str]]) -> None:
        """A later write: in the mirror now, in ZooKeeper right after (write-behind).

        Updates of one service are written by one greenlet, each time with
        every change since its last write, so a client that updates faster
        than ZooKeeper answers is never held back (in memory it is not
        either). Only a write that changes the node's kind (``persist``)
        waits for ZooKeeper.
        """
        assert svc.name is not None
        name = svc.name
        node = self._nodes.get(name)
        if node is None or svc.removed:
            raise RegistryError(GONE)
        if _persistent(_apply(svc.attrs, pairs)) == (node.session != 0):
            writer = self._writers.get(name)
            if writer is not None:
                writer.join(self.write_timeout)
            self._swap(svc, pairs)
            return
        for attr, value in pairs:
            svc.set(attr, value)
        svc.vers += 1
        self._changed()
        self._behind.setdefault(name, []).extend(pairs)
        if name not in self._writers:
            self._writers[name] = gevent.spawn(self._write_behind, svc, name)

    def _write_behind(self, svc: Service, name: str) -> None:
        path = self._path(name)
        try:
            while not svc.removed and (pairs := self._behind.pop(name, None)):
                node = self._nodes.get(name)
                if node is None:
                    return
                try:
                    stat = self._call("set", path, _encode(svc.owner, name, svc.attrs),
                                      version=node.version)
                except BadVersionError:
                    # Another frontend wrote it: ours go on top of theirs.
                    self._behind[name] = pairs + self._behind.get(name, [])
                    data, stat = self._call("get", path)
                    _, _, theirs = _decode(data)
                    svc.attrs = _apply(theirs, self._behind[name])
                    svc.vers += 1
                    self._nodes[name] = _Node.of(stat)
                    self._changed()
                    continue
                except RegistryError:  # unavailable: try again until the session tells
                    self._behind[name] = pairs + self._behind.get(name, [])
                    gevent.sleep(0.5)
                    continue
                self._nodes[name] = _Node.of(stat)
        except NoNodeError:
            self._forget(svc)
        except RegistryError as err:
            log.warning("zookeeper: update of %r not written: %s", name, err)
        finally:
            self._writers.pop(name, None)
            self._behind.pop(name, None)
            missed = self._missed.pop(name, None)
            if missed is not None and not svc.removed:
                self._upsert(name, *missed)

    def _swap(self, svc: Service, pairs: list[tuple[str, str]]) -> None:
        """A write that makes the service persistent or not: a new node of the
        other kind, in one transaction with the old one's delete."""
        assert svc.name is not None
        name, path = svc.name, self._path(svc.name)
        for _ in range(_RETRIES):
            node = self._nodes.get(name)
            if node is None or svc.removed:
                raise RegistryError(GONE)
            attrs = _apply(svc.attrs, pairs)
            persistent = _persistent(attrs)
            try:
                tx = self._zk.transaction()
                tx.delete(path, version=node.version)
                tx.create(path, _encode(svc.owner, name, attrs), ephemeral=not persistent)
                outcome, _ = self._retried(tx.commit_async)
                if isinstance(outcome[0], Exception):
                    raise outcome[0]
                stat = self._call("exists", path)
                if stat is None:
                    raise NoNodeError()
            except BadVersionError:
                self._refresh(svc)  # someone else wrote it: merge into theirs
                continue
            except NoNodeError:
                self._forget(svc)
                raise RegistryError(GONE) from None
            self._upsert(name, svc.owner, attrs, _Node.of(stat), svc)
            return
        raise RegistryError(UNAVAILABLE)

    def _refresh(self, svc: Service) -> None:
        assert svc.name is not None
        try:
            data, stat = self._call("get", self._path(svc.name))
        except NoNodeError:
            self._forget(svc)
            return
        owner, name, attrs = _decode(data)
        self._upsert(name, owner, attrs, _Node.of(stat))

    def add_static(self, name: str, attrs: Iterable[tuple[str, str]], owner: str = "registry") -> bool:
        """A persistent service of the static database; a peer's load of it counts."""
        pairs = _apply([], list(attrs))
        if service_name_error(name) is not None or service_error(name, dict(pairs), self.limits):
            return False
        try:
            _, stat = self._call("create", self._path(name), _encode(owner, name, pairs),
                                 include_data=True)
        except NodeExistsError:
            try:
                data, stat = self._call("get", self._path(name))
            except NoNodeError:
                return False
            have, name, pairs = _decode(data)
            self._upsert(name, have, pairs, _Node.of(stat))
            return have == owner
        self._upsert(name, owner, pairs, _Node.of(stat))
        return True

    # -- removal ------------------------------------------------------------------------

    def release(self, svc: Service, *, force: bool = False) -> None:
        """The ``new`` file closed: delete the node unless it persists. Never blocks."""
        if svc.removed:
            return
        name = svc.name
        node = self._nodes.get(name) if name is not None else None
        if name is None or node is None:
            self._drop(svc)  # unnamed, or its node is already gone
            return
        if not force and node.session == 0:
            return  # persistent: outlives its connection
        self._forget(svc)
        if node.session and node.session != self.session_id:
            return  # ephemeral of an expired session: gone with it
        self._delete_later(self._path(name), node.czxid)

    def _delete_later(self, path: str, czxid: int) -> None:
        """Delete the node at ``path`` if it is still incarnation ``czxid``; retried
        after a reconnection if the connection fails meanwhile. Until it is
        done, a registration of the same name here waits for it (as in
        memory, where a name is free again as soon as its holder closes)."""
        deleted = self._deleting.setdefault(path, Event())

        def finish() -> None:
            if self._deleting.get(path) is deleted:
                del self._deleting[path]
            deleted.set()

        def done(result: Any) -> None:
            if isinstance(result.exception, (ConnectionLoss, ConnectionClosedError)):
                self._undone.append((path, czxid))
            elif result.exception is not None and not isinstance(result.exception, NoNodeError):
                log.warning("zookeeper: delete %s: %r", path, result.exception)
            finish()

        def check(result: Any) -> None:
            if result.successful():
                stat = result.value
                if stat is not None and stat.czxid == czxid:
                    # Any version: a write-behind may land between the two calls.
                    self._zk.delete_async(path).rawlink(done)
                    return
                finish()
            else:
                done(result)

        self._zk.exists_async(path).rawlink(check)

    def _retry_deletes(self) -> None:
        undone, self._undone = self._undone, []
        for path, czxid in undone:
            self._delete_later(path, czxid)

    def remove(self, svc: Service, user: str) -> None:
        """Tremove of a service file: only its owner may, from any frontend."""
        if svc.removed or svc.owner != user or svc.name is None:
            raise RegistryError("permission denied")
        try:
            self._call("delete", self._path(svc.name))
        except NoNodeError:
            pass
        self._forget(svc)
