"""The Styx (9P2000) transport: the registry's own file protocol (registry4.md §7).

Inferno exports a registry on port 6675 (``listen -A 'tcp!*!registry'
{export /mnt/registry &}``), so this transport needs no shell listeners,
and it is better than the TCP gateway on both counts that matter:

* one TCP connection carries every registration, find and event stream of
  a :class:`Styx` object (see :mod:`.styxsession`);
* every write is answered, so :meth:`Styx.open_new` returns when the
  registry accepted the service, or raises its own error text.

A registration is a fid open on ``new``; closing it clunks the fid, and
when the session drops the registry clunks every fid itself.

A ``persist`` service outlives its session. When :meth:`Styx.open_new` of
a persistent service meets ``duplicate service name``, it takes the entry
back if it is ours: owned by this connection's ``user`` (Tstat), itself
persistent, and holding no attribute we do not send (writes never delete
an attribute, so our write then makes the entry exactly ours). It opens the
service file by name for writing, as its owner may, and writes our
attributes; updates then land there. Any other entry is left alone.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Optional, Union

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from .. import ninep
from ..errors import ProtocolError, RegistryError
from ..limits import check_service
from ..wire import format_attrs, parse_services, quote
from .liveness import PROBE_INTERVAL, PROBE_TIMEOUT, check_probe_options
from .styxsession import ROOT_FID, Call, Session, expect

__all__ = ["Styx", "StyxEventStream", "StyxRegistration", "StyxFinder", "LISTING_LIMIT"]

log = logging.getLogger("regmgr")

#: Largest ``find``/``index`` reply accepted, in bytes.
LISTING_LIMIT = 64 << 20
_VERSION = re.compile(rb"\d+\n")
_EVENT_READ = 64


def _io_limit(session: Session, iounit: int) -> int:
    """Bytes one read or write may carry on a file opened with ``iounit``."""
    limit = session.msize - ninep.IOHDRSZ
    return min(iounit, limit) if iounit else limit


def _persists(attrs: Mapping[str, str]) -> bool:
    """Whether ``attrs`` make a service outlive its fid, read as the registry reads them."""
    from ..server.state import persist_value  # the registry's own reading, loaded when needed
    return persist_value(attrs.get("persist")) != 0


def _writes(name: Optional[str], attrs: Mapping[str, str], limit: int) -> list[bytes]:
    """``[name] attr value ...`` as few writes of at most ``limit`` bytes as it takes.

    Each write is one whole set of pairs (the first starts with the name),
    so a long attribute list is applied in steps, never cut mid-word.
    """
    pieces = [quote(name).encode("utf-8")] if name is not None else []
    pieces += [f"{quote(k)} {quote(v)}".encode("utf-8") for k, v in attrs.items()]
    writes: list[bytes] = []
    for piece in pieces:
        if len(piece) > limit:
            raise ValueError(f"{piece[:40]!r}... is {len(piece)} bytes, over the "
                             f"{limit}-byte write limit of this Styx session (msize)")
        if writes and len(writes[-1]) + 1 + len(piece) <= limit:
            writes[-1] += b" " + piece
        else:
            writes.append(piece)
    return writes


class StyxEventStream:
    """An open ``event`` fid: each read blocks until the registry changes."""

    def __init__(self, session: Session, fid: int) -> None:
        self._session = session
        self._fid = fid
        self._call: Optional[Call] = None
        self._closed = False

    def wait(self) -> int:
        if self._closed:
            raise ConnectionError(f"{self._session.label}: event stream closed")
        call = self._session.start(lambda tag: ninep.Tread(tag, self._fid, 0, _EVENT_READ))
        self._call = call
        try:
            reply = self._session.wait(call)
        finally:
            self._call = None
        expect(reply, ninep.Rread, self._session.label)
        assert isinstance(reply, ninep.Rread)
        if not _VERSION.fullmatch(reply.data):
            raise ProtocolError(f"{self._session.label}: bad event line", reply.data)
        return int(reply.data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        call = self._call
        if call is not None:  # a reader is blocked: flush its read, then wake it
            self._session.cancel(call)
            if not call.result.ready():
                call.result.set_exception(ConnectionError(
                    f"{self._session.label}: event stream closed"))
        self._session.clunk(self._fid)
        self._session.release()


class StyxRegistration:
    """A service registered through a fid open on ``new``: it lives as long as the fid."""

    def __init__(self, session: Session, fid: int, name: str, limit: int) -> None:
        self.name = name
        self._session = session
        self._fid = fid
        self._limit = limit
        self._ended: AsyncResult = AsyncResult()  # None: closed; an exception: lost
        self._closed = False
        self._notify: Optional[Callable[[Optional[Exception]], object]] = None

    def __repr__(self) -> str:
        return f"<StyxRegistration {self.name!r} on {self._session.label}>"

    def update(self, attrs: Mapping[str, str]) -> None:
        """Send the writes and return at once: a slow or hung registry never blocks it.

        A refused write (someone removed the service) ends the registration,
        so :meth:`wait` raises and the caller registers again with every
        attribute; a session that dies first ends it too.
        """
        if not attrs:
            return
        check_service(None, attrs)  # the tasks checked; this is the last line of defence
        label = f"{self._session.label} {self.name!r}"
        if self._ended.ready() or not self._session.alive:
            raise ConnectionError(f"{label}: registration closed or lost")
        for data in _writes(None, attrs, self._limit):
            self._session.post(self._twrite(data), self._written)

    def _twrite(self, data: bytes) -> Callable[[int], ninep.TMessage]:
        return lambda tag: ninep.Twrite(tag, self._fid, 0, data)

    def _written(self, reply: ninep.RMessage) -> None:
        """The answer to an update's write (run by the session's reader)."""
        try:
            expect(reply, ninep.Rwrite, f"{self._session.label} {self.name!r}")
        except (RegistryError, ProtocolError) as err:
            if not self._ended.ready():
                self._ended.set_exception(err)

    def wait(self) -> None:
        gevent.wait([self._ended, self._session.dead], count=1)
        if self._ended.ready():
            self._ended.get()  # raises if the registration was lost
            return
        raise self._session_lost()

    def _session_lost(self) -> ConnectionError:
        return ConnectionError(f"{self._session.label} {self.name!r}: {self._session.error}")

    def notify(self, callback: Callable[[Optional[Exception]], object]) -> None:
        self._notify = callback
        self._ended.rawlink(self._on_ended)
        if not self._session.alive:
            gevent.get_hub().loop.run_callback(self._end, self._session_lost())
            return
        ends = _ends.get(self._session)
        if ends is None:
            ends = _ends[self._session] = _SessionEnds(self._session)
        ends.waiting[self] = None

    def _on_ended(self, ended: AsyncResult) -> None:
        error = ended.exception
        self._end(error if isinstance(error, Exception) else None)

    def _end(self, error: Optional[Exception]) -> None:
        callback, self._notify = self._notify, None
        if callback is None:
            return
        self._ended.unlink(self._on_ended)
        ends = _ends.get(self._session)
        if ends is not None:
            ends.waiting.pop(self, None)
        callback(error)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._ended.ready():
            self._ended.set(None)
        self._session.clunk(self._fid)  # unregisters, unless the service persists
        self._session.release()


class _SessionEnds:
    """The registrations of one session waiting in ``notify()``: one link on its death for all.

    (A link per registration would make each one's end O(registrations).)
    """

    def __init__(self, session: Session) -> None:
        self.waiting: dict[StyxRegistration, None] = {}
        session.dead.rawlink(self._dead)  # the session holds this; this does not hold it

    def _dead(self, _: object) -> None:
        for registration in list(self.waiting):
            registration._end(registration._session_lost())


_ends: weakref.WeakKeyDictionary[Session, _SessionEnds] = weakref.WeakKeyDictionary()

Filter = tuple[tuple[str, str], ...]


class StyxFinder:
    """``find`` fids kept open with their filter, so that a repeated find is one read.

    Each open ``find`` file has its own filter, and its listing is computed
    afresh by every read at offset 0 (registry4.md §4). So a fid walked,
    opened and given its filter once answers each later find with that
    filter in one Tread of ``msize - IOHDRSZ`` bytes (a listing that does
    not fit takes more), where a fresh fid costs walk, open, write, reads
    and clunk. Inferno's export accepts reads that large and fills them
    across its own mount, so a reply shorter than asked ends the listing;
    one that stops at a multiple of ``iounit`` may only be a server that
    caps reads there, and one more read tells. Only the standard protocol
    is used.

    A fid serves one find at a time; finds running together with one
    filter open one fid each. Up to ``keep`` idle fids are kept, the least
    recently used clunked first. They do not hold the session: when it
    ends they end with it, and the next session starts empty.
    """

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._session: Optional[Session] = None
        self._idle: OrderedDict[tuple[Filter, int], tuple[int, int]] = OrderedDict()
        self._serial = 0  # tells apart idle fids of one filter

    def find_text(self, styx: Styx, session: Session, attrs: Mapping[str, str]) -> str:
        """The listing of the services matching ``attrs``, read through a kept or a new fid."""
        if session is not self._session:
            self._session = session
            self._idle.clear()  # their session is gone, and its fids with it
        key = tuple(sorted(attrs.items()))
        fid, iounit = self._take(key) or self._open(styx, session, attrs)
        try:
            text = _read_listing(styx, session, fid, iounit)
        except BaseException:
            session.clunk(fid)
            raise
        self._put(session, key, fid, iounit)
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ProtocolError(f"{session.label}: listing is not UTF-8",
                                err.object[:200]) from err

    def _take(self, key: Filter) -> Optional[tuple[int, int]]:
        for idle in self._idle:
            if idle[0] == key:
                return self._idle.pop(idle)
        return None

    def _put(self, session: Session, key: Filter, fid: int, iounit: int) -> None:
        if session is not self._session or not session.alive:
            return
        self._serial += 1
        self._idle[(key, self._serial)] = (fid, iounit)
        while len(self._idle) > self.keep:
            _, (old, _) = self._idle.popitem(last=False)
            session.clunk(old)

    @staticmethod
    def _open(styx: Styx, session: Session, attrs: Mapping[str, str]) -> tuple[int, int]:
        fid = session.alloc_fid()
        try:
            expect(styx._call(session, ninep.Twalk(0, ROOT_FID, fid, ("find",))),
                   ninep.Rwalk, session.label)
            opened = styx._call(session, ninep.Topen(0, fid, ninep.ORDWR))
            expect(opened, ninep.Ropen, session.label)
            assert isinstance(opened, ninep.Ropen)
            if attrs:  # a fresh find fid has no filter: nothing to clear
                data = format_attrs(attrs).encode("utf-8")
                limit = _io_limit(session, opened.iounit)
                if len(data) > limit:
                    raise ValueError(f"filter of {len(data)} bytes is over the "
                                     f"{limit}-byte write limit of this Styx session")
                expect(styx._call(session, ninep.Twrite(0, fid, 0, data)),
                       ninep.Rwrite, session.label)
        except BaseException:
            session.clunk(fid)
            raise
        return fid, opened.iounit


def _read_listing(styx: Styx, session: Session, fid: int, iounit: int) -> bytes:
    """A whole file (listing or service line), read from offset 0 on until a
    read comes back empty, or short and not a multiple of ``iounit`` (a server
    may cap reads at its iounit: then one more read tells)."""
    count = session.msize - ninep.IOHDRSZ
    chunks: list[bytes] = []
    offset = 0
    while True:
        reply = styx._call(session, ninep.Tread(0, fid, offset, count))
        expect(reply, ninep.Rread, session.label)
        assert isinstance(reply, ninep.Rread)
        data = reply.data
        offset += len(data)
        if offset > LISTING_LIMIT:
            raise ProtocolError(f"{session.label}: listing over {LISTING_LIMIT} bytes")
        chunks.append(data)
        if not data or (len(data) < count and (not iounit or len(data) % iounit)):
            return b"".join(chunks)


def _registries(host: object, port: int) -> list[tuple[str, int]]:
    """Every registry a Styx connection may dial: ``host`` or a list of hosts
    (on ``port``) and ``(host, port)`` tuples."""
    entries = [host] if isinstance(host, str) else host
    if not isinstance(entries, Sequence) or not entries:
        raise TypeError(f"host must be str or a non-empty list of registries, not {host!r}")
    out: list[tuple[str, int]] = []
    for entry in entries:
        if isinstance(entry, str):
            out.append((entry, port))
        elif (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)
              and isinstance(entry[1], int)):
            out.append(entry)
        else:
            raise TypeError(f"a registry is a host str or (host, port), not {entry!r}")
    return out


class Styx:
    """Reach a registry over Styx, as Inferno exports it on port 6675.

    ``user`` is the uname of Tattach: it owns the services registered here,
    and only it may :meth:`remove` them. ``msize`` is the largest message
    proposed: the default is the most Inferno's export allows (64 KiB of
    data), so that one read carries a find of some 2,000 services.
    ``connect_timeout`` bounds connecting and every call except event reads
    and updates (which never wait). One session (one socket) is shared by
    every stream, registration and call of this object while any of them is
    open; the last one to close ends it, and the next call opens a new one.

    The session is probed: a Tstat every ``probe_interval`` seconds must be
    answered within ``probe_timeout``, and its socket has kernel keepalive
    with the same two settings (:mod:`.liveness`). So a registry that
    hangs, or a host or link that goes silent, ends the session within
    about ``probe_interval + probe_timeout`` seconds (8 s by default), and
    the manager reconnects.

    ``host`` may be a list of registries, the frontends of one replicated
    registry (``regmgr serve --store zookeeper://...``): hosts on ``port``, or
    ``(host, port)`` tuples. Each new session (each reconnection) dials the
    next one.
    """

    def __init__(self, host: Union[str, Sequence[Union[str, tuple[str, int]]]],
                 port: int = 6675, *, user: str = "none",
                 msize: int = 65536 + ninep.IOHDRSZ, connect_timeout: float = 5.0,
                 probe_interval: float = PROBE_INTERVAL,
                 probe_timeout: float = PROBE_TIMEOUT) -> None:
        check_probe_options(probe_interval, probe_timeout)
        self.registries = _registries(host, port)
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.host, self.port = self.registries[0]
        self._dialled = 0  # sessions dialled so far: each new one moves along the list
        self.user = user
        self.msize = msize
        self.connect_timeout = connect_timeout
        self._session: Optional[Session] = None
        self._connecting = Semaphore()
        self._finder = StyxFinder()
        self._sent_before = 0  # by the sessions before the current one

    def __getstate__(self) -> dict[str, object]:
        """Only the configuration pickles; a copy dials its own session when first used."""
        host = self.host if len(self.registries) == 1 else self.registries
        return {"host": host, "port": self.port, "user": self.user, "msize": self.msize,
                "connect_timeout": self.connect_timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        Styx.__init__(self, **state)

    def __repr__(self) -> str:
        if len(self.registries) > 1:
            return f"Styx({self.registries!r}, user={self.user!r})"
        return f"Styx({self.host!r}, port={self.port}, user={self.user!r})"

    def _acquire(self) -> Session:
        """The live session (dialled if need be), held for the caller."""
        with self._connecting:
            session = self._session
            if session is None or not session.alive:
                self._sent_before += session.sent if session is not None else 0
                self.host, self.port = self.registries[self._dialled % len(self.registries)]
                self._dialled += 1
                session = Session.connect(self.host, self.port, self.user, self.msize,
                                          self.connect_timeout, self.probe_interval,
                                          self.probe_timeout)
                self._session = session
            session.hold()
            return session

    @contextmanager
    def _held(self) -> Iterator[Session]:
        session = self._acquire()
        try:
            yield session
        finally:
            session.release()

    def _call(self, session: Session, msg: ninep.TMessage) -> ninep.RMessage:
        """Send ``msg`` (its tag is filled in) and wait for the reply."""
        return session.call(lambda tag: dataclasses.replace(msg, tag=tag), self.connect_timeout)

    def _open(self, session: Session, name: str, mode: int) -> tuple[int, int]:
        """Walk a new fid from the root to ``name`` and open it; returns (fid, io limit)."""
        fid = session.alloc_fid()
        try:
            reply = self._call(session, ninep.Twalk(0, ROOT_FID, fid, (name,)))
            expect(reply, ninep.Rwalk, session.label)
            opened = self._call(session, ninep.Topen(0, fid, mode))
            expect(opened, ninep.Ropen, session.label)
        except BaseException:
            session.clunk(fid)
            raise
        assert isinstance(opened, ninep.Ropen)
        return fid, _io_limit(session, opened.iounit)

    def _listing(self, name: str) -> dict[str, dict[str, str]]:
        with self._held() as session:
            fid, limit = self._open(session, name, ninep.OREAD)
            try:
                text = _read_listing(self, session, fid, limit)
            finally:
                session.clunk(fid)
        try:
            return parse_services(text.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ProtocolError(f"{session.label}: listing is not UTF-8",
                                err.object[:200]) from err

    def open_event(self) -> StyxEventStream:
        session = self._acquire()
        try:
            fid, _ = self._open(session, "event", ninep.OREAD)
        except BaseException:
            session.release()
            raise
        return StyxEventStream(session, fid)

    def open_new(self, name: str, attrs: Optional[Mapping[str, str]] = None) -> StyxRegistration:
        attrs = dict(attrs or {})
        check_service(name, attrs, name_rules=False)  # the registry answers a bad name
        session = self._acquire()
        try:
            fid, limit = self._open(session, "new", ninep.OWRITE)
            try:
                self._write(session, fid, name, attrs, limit)
            except RegistryError as err:
                session.clunk(fid)  # the service goes with its fid
                if err.text != "duplicate service name" or not _persists(attrs):
                    raise
                fid, limit = self._adopt(session, name, attrs, err)
            except BaseException:
                session.clunk(fid)
                raise
        except BaseException:
            session.release()
            raise
        return StyxRegistration(session, fid, name, limit)

    def _write(self, session: Session, fid: int, name: Optional[str], attrs: Mapping[str, str],
               limit: int) -> None:
        for data in _writes(name, attrs, limit):
            expect(self._call(session, ninep.Twrite(0, fid, 0, data)), ninep.Rwrite, session.label)

    def _adopt(self, session: Session, name: str, attrs: Mapping[str, str],
               refusal: RegistryError) -> tuple[int, int]:
        """Take back our persistent entry ``name`` (module doc); else raise ``refusal``."""
        if name in (".", ".."):
            raise refusal  # walking there would not reach a service file
        fid = session.alloc_fid()
        try:
            expect(self._call(session, ninep.Twalk(0, ROOT_FID, fid, (name,))),
                   ninep.Rwalk, session.label)
            stat = self._call(session, ninep.Tstat(0, fid))
            expect(stat, ninep.Rstat, session.label)
            assert isinstance(stat, ninep.Rstat)
            if stat.stat.uid != self.user:
                raise refusal
            opened = self._call(session, ninep.Topen(0, fid, ninep.ORDWR))
            expect(opened, ninep.Ropen, session.label)
            assert isinstance(opened, ninep.Ropen)
            limit = _io_limit(session, opened.iounit)
            entry = parse_services(_read_listing(self, session, fid, limit).decode("utf-8", "replace"))
            held = entry.get(name)
            if held is None or not _persists(held) or held.keys() - attrs.keys():
                raise refusal
            self._write(session, fid, None, {k: v for k, v in attrs.items() if held.get(k) != v},
                        limit)
        except RegistryError:
            session.clunk(fid)  # a second fid on a service: clunking it unregisters nothing
            raise refusal from None
        except BaseException:
            session.clunk(fid)
            raise
        log.info("%s: took back our persistent service %r", session.label, name)
        return fid, limit

    def find(self, attrs: Optional[Mapping[str, str]] = None) -> dict[str, dict[str, str]]:
        return parse_services(self.find_text(attrs))

    def find_text(self, attrs: Optional[Mapping[str, str]] = None) -> str:
        """:meth:`find`'s listing as the registry sent it (``index`` format)."""
        attrs = dict(attrs or {})
        check_service(None, attrs)
        with self._held() as session:
            return self._finder.find_text(self, session, attrs)

    @property
    def requests_sent(self) -> int:
        """T-messages sent so far (Tversion excepted): the request/reply round trips."""
        session = self._session
        return self._sent_before + (session.sent if session is not None else 0)

    def index(self) -> dict[str, dict[str, str]]:
        """Every named service (the ``index`` file)."""
        return self._listing("index")

    def remove(self, name: str) -> None:
        """Remove service ``name`` (Tremove): the only way to delete a ``persist`` service.

        Raises :class:`~regmgr.errors.RegistryError`: ``file does not exist``
        if there is no such service, ``permission denied`` if ``user`` does
        not own it.
        """
        with self._held() as session:
            fid = session.alloc_fid()
            try:
                expect(self._call(session, ninep.Twalk(0, ROOT_FID, fid, (name,))),
                       ninep.Rwalk, session.label)
                reply = self._call(session, ninep.Tremove(0, fid))
            except BaseException:
                session.clunk(fid)
                raise
            session.free_fid(fid)  # Tremove clunks the fid even when it fails
            expect(reply, ninep.Rremove, session.label)
