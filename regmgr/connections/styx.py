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
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Optional

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from .. import ninep
from ..errors import ProtocolError, RegistryError
from ..wire import format_attrs, parse_services, quote
from .styxsession import ROOT_FID, Call, Session, expect

__all__ = ["Styx", "StyxEventStream", "StyxRegistration", "LISTING_LIMIT"]

#: Largest ``find``/``index`` reply accepted, in bytes.
LISTING_LIMIT = 64 << 20
_VERSION = re.compile(rb"\d+\n")
_EVENT_READ = 64


def _io_limit(session: Session, iounit: int) -> int:
    """Bytes one read or write may carry on a file opened with ``iounit``."""
    limit = session.msize - ninep.IOHDRSZ
    return min(iounit, limit) if iounit else limit


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

    def __init__(self, session: Session, fid: int, name: str, limit: int, timeout: float) -> None:
        self.name = name
        self._session = session
        self._fid = fid
        self._limit = limit
        self._timeout = timeout
        self._ended: AsyncResult = AsyncResult()  # None: closed; an exception: lost
        self._closed = False

    def __repr__(self) -> str:
        return f"<StyxRegistration {self.name!r} on {self._session.label}>"

    def update(self, attrs: Mapping[str, str]) -> None:
        if not attrs:
            return
        label = f"{self._session.label} {self.name!r}"
        if self._ended.ready() or not self._session.alive:
            raise ConnectionError(f"{label}: registration closed or lost")
        for data in _writes(None, attrs, self._limit):
            reply = self._session.call(
                lambda tag: ninep.Twrite(tag, self._fid, 0, data), self._timeout)  # noqa: B023 (called at once)
            try:
                expect(reply, ninep.Rwrite, label)
            except RegistryError as err:  # the service is gone (someone removed it)
                if not self._ended.ready():
                    self._ended.set_exception(err)
                raise ConnectionError(f"{label}: update refused: {err}") from err

    def wait(self) -> None:
        gevent.wait([self._ended, self._session.dead], count=1)
        if self._ended.ready():
            self._ended.get()  # raises if the registration was lost
            return
        raise ConnectionError(f"{self._session.label} {self.name!r}: {self._session.error}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._ended.ready():
            self._ended.set(None)
        self._session.clunk(self._fid)  # unregisters, unless the service persists
        self._session.release()


class Styx:
    """Reach a registry over Styx, as Inferno exports it on port 6675.

    ``user`` is the uname of Tattach: it owns the services registered here,
    and only it may :meth:`remove` them. ``msize`` is the largest message
    proposed. ``connect_timeout`` bounds connecting and every call except
    event reads. One session (one socket) is shared by every stream,
    registration and call of this object while any of them is open; the
    last one to close ends it, and the next call opens a new one.
    """

    def __init__(self, host: str, port: int = 6675, *, user: str = "none",
                 msize: int = 8192, connect_timeout: float = 5.0) -> None:
        if not isinstance(host, str):
            raise TypeError(f"host must be str, not {type(host).__name__}")
        self.host = host
        self.port = port
        self.user = user
        self.msize = msize
        self.connect_timeout = connect_timeout
        self._session: Optional[Session] = None
        self._connecting = Semaphore()

    def __repr__(self) -> str:
        return f"Styx({self.host!r}, port={self.port}, user={self.user!r})"

    def _acquire(self) -> Session:
        """The live session (dialled if need be), held for the caller."""
        with self._connecting:
            session = self._session
            if session is None or not session.alive:
                session = Session.connect(self.host, self.port, self.user, self.msize,
                                          self.connect_timeout)
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

    def _read_all(self, session: Session, fid: int, limit: int) -> bytes:
        chunks: list[bytes] = []
        offset = 0
        while True:
            reply = self._call(session, ninep.Tread(0, fid, offset, limit))
            expect(reply, ninep.Rread, session.label)
            assert isinstance(reply, ninep.Rread)
            if not reply.data:
                return b"".join(chunks)
            offset += len(reply.data)
            if offset > LISTING_LIMIT:
                raise ProtocolError(f"{session.label}: listing over {LISTING_LIMIT} bytes")
            chunks.append(reply.data)

    def _listing(self, name: str, attrs: Optional[Mapping[str, str]]) -> dict[str, dict[str, str]]:
        with self._held() as session:
            fid, limit = self._open(session, name, ninep.ORDWR if attrs is not None else ninep.OREAD)
            try:
                if attrs:  # a fresh find fid has no filter: nothing to clear
                    data = format_attrs(attrs).encode("utf-8")
                    if len(data) > limit:
                        raise ValueError(f"filter of {len(data)} bytes is over the "
                                         f"{limit}-byte write limit of this Styx session")
                    expect(self._call(session, ninep.Twrite(0, fid, 0, data)),
                           ninep.Rwrite, session.label)
                text = self._read_all(session, fid, limit)
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
        session = self._acquire()
        try:
            fid, limit = self._open(session, "new", ninep.OWRITE)
            try:
                for data in _writes(name, dict(attrs or {}), limit):
                    expect(self._call(session, ninep.Twrite(0, fid, 0, data)),
                           ninep.Rwrite, session.label)
            except BaseException:
                session.clunk(fid)  # the service goes with its fid
                raise
        except BaseException:
            session.release()
            raise
        return StyxRegistration(session, fid, name, limit, self.connect_timeout)

    def find(self, attrs: Optional[Mapping[str, str]] = None) -> dict[str, dict[str, str]]:
        return self._listing("find", dict(attrs or {}))

    def index(self) -> dict[str, dict[str, str]]:
        """Every named service (the ``index`` file)."""
        return self._listing("index", None)

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
