"""The Styx server's protocol state, sans-I/O: 9P2000 messages in, replies out.

One :class:`StyxSession` is one client connection's view of the registry
tree (registry4.md §7, §9): its fids and what they point at, their open
modes, the tags of blocked event reads, Tflush, and Inferno's error texts.
It never touches a socket or gevent, so every rule is tested by feeding it
message values (``tests/test_server_styxproto.py``); :mod:`.styx` is the
socket loop beside it, as :mod:`regmgr.ninep` is the codec beside both.

* :meth:`StyxSession.handle` takes one T-message and returns the replies it
  causes now (none for an event read that blocks; two when a clunk ends a
  blocked read).
* :meth:`StyxSession.changed` is called after the registry changed and
  returns the answers to event reads that were waiting for it.
* :meth:`StyxSession.close` clunks every fid, as a dropped connection does.

Memory is bounded per session: a session holds at most :data:`MAX_FIDS`
fids, and the file contents its fids took at their last read at offset 0
(listings of ``index``, ``find``, the directory, service lines) add up to
at most :data:`MAX_HELD_BYTES` beyond the one being taken, so one listing
of any size can always be read; a read past that bound fails with
:data:`EHELD`. Those snapshots are shared: every fid of every session that
reads the same listing at the same registry version holds the same bytes
(:class:`Listings`), so 300 fids reading a 2 MiB index cost 2 MiB, not 600.

Qids are ``ndb/registry``'s: the root is 0, ``new`` 1, ``index`` 2,
``event`` 3, ``find`` 4, and a service file ``(id << 4) | 5`` with ids from 0
(each open of ``new`` takes the next one) and qid.vers counting its writes.
"""
from __future__ import annotations

import bisect
import weakref
from collections.abc import Callable, Hashable
from typing import Optional

from .. import ninep
from ..errors import RegistryError
from ..ninep import (
    DMDIR, IOHDRSZ, ORCLOSE, ORDWR, OREAD, OTRUNC, OWRITE, QTDIR, QTFILE, Qid, Stat,
)
from .state import GONE, Filter, Service, Watcher, parse_filter
from .store import Store

__all__ = [
    "StyxSession", "Listings", "MAX_FIDS", "MAX_HELD_BYTES", "MAX_MSIZE", "MIN_MSIZE", "MAX_IOUNIT",
    "QROOT", "QNEW", "QINDEX", "QEVENT", "QFIND", "QSVC", "openok",
]

#: Largest msize offered: Inferno's export allows 64 KiB of data plus the header.
MAX_MSIZE = 65536 + IOHDRSZ
#: Smallest msize accepted (styxservers refuses less).
MIN_MSIZE = 256
#: iounit in Ropen, as export reports for the registry's mount.
MAX_IOUNIT = 8192
#: Fids one session may hold (each registration holds one): enough for 100,000
#: services over one session (issue 14), about 60 MiB of fids at most.
MAX_FIDS = 1 << 18
#: Bytes of file snapshots one session may hold besides the one it is taking.
MAX_HELD_BYTES = 16 << 20

# Error texts of Inferno's styxservers(2) and export.
EBADFID = "bad fid"
EINUSE = "fid already in use"
EOPEN = "fid already opened"
ENOTFOUND = "file does not exist"
ENOTDIR = "not a directory"
EPERM = "permission denied"
EBADARG = "bad argument"
EOFFSET = "read/write -- bad offset"
ECOUNT = "read/write -- count negative or exceeds msgsize"
ENOTOPEN = "read/write -- on non open fid"
EACCESS = "read/write -- not open in suitable mode"
ENOAUTH = "authentication not required"
ENOVERSION = "Tversion not seen"
ESMALL = "message size too small"
EBIGREPLY = "Styx reply didn't fit"
ECONCURRENT = "concurrent read for event fid"
ETAGINUSE = "tag in use"
# regmgr's own bounds (Inferno has none).
ENOFIDS = "too many fids"
EHELD = "too much file data held open: clunk some fids"

# Qid paths, numbered as ndb/registry does: a service is (id << 4) | QSVC.
QROOT, QNEW, QINDEX, QEVENT, QFIND, QSVC = range(6)
_SHIFT, _MASK = 4, 0xF
_STATIC = {  # path: (name, mode)
    QROOT: ("/", DMDIR | 0o777),
    QNEW: ("new", 0o666),
    QINDEX: ("index", 0o444),
    QFIND: ("find", 0o666),
    QEVENT: ("event", 0o444),
}
_LISTED = (QNEW, QINDEX, QFIND, QEVENT)
_BY_NAME = {_STATIC[path][0]: path for path in _LISTED}
_REGISTRY_USER = "registry"


class _Refused(Exception):
    """A request fails with this Rerror text."""


def openok(uname: str, omode: int, perm: int, uid: str, gid: str) -> bool:
    """May ``uname`` open a file of ``perm`` owned by uid/gid with ``omode``? (styxservers)"""
    want = (0o400, 0o200, 0o600, 0o100)[omode & 3]
    if omode & OTRUNC:
        if perm & DMDIR:
            return False
        want |= 0o200
    if uname == uid and want & perm == want:
        return True
    if uname == gid and want & (perm << 3) == want:
        return True
    return want & (perm << 6) == want


def _event_line(version: int, count: int) -> bytes:
    """What an event read returns: the version line, cut to the read's count."""
    return (b"%08d\n" % version)[:count]


def _service_path(svc: Service) -> int:
    return (svc.id << _SHIFT) | QSVC


class _Snapshot:
    """A file's contents as taken at a read at offset 0, shared while it is current.

    ``starts`` (directories only) are the offsets of whole entries.
    """

    __slots__ = ("data", "starts", "__weakref__")

    def __init__(self, data: bytes, starts: Optional[list[int]] = None) -> None:
        self.data = data
        self.starts = starts


class Listings:
    """Snapshots of the current registry version, shared by every fid that reads one.

    Held weakly: a snapshot lives while a fid holds it, so this cache never
    holds memory that no session accounts for.
    """

    def __init__(self, registry: Store) -> None:
        self._registry = registry
        self._version = -1
        self._memo: weakref.WeakValueDictionary[Hashable, _Snapshot] = weakref.WeakValueDictionary()

    def get(self, key: Hashable, make: Callable[[], _Snapshot]) -> _Snapshot:
        if self._version != self._registry.version:
            self._version = self._registry.version
            self._memo = weakref.WeakValueDictionary()
        snap = self._memo.get(key)
        if snap is None:
            snap = make()
            self._memo[key] = snap
        return snap


class _Fid:
    """What one client fid points at, and its state once opened."""

    __slots__ = ("path", "uname", "mode", "created", "snap", "filter", "watcher", "pending")

    def __init__(self, path: int, uname: str) -> None:
        self.path = path
        self.uname = uname
        self.mode: Optional[int] = None  # open mode (with ORCLOSE) once open
        self.created: Optional[Service] = None  # the service this fid opened on ``new``
        self.snap: Optional[_Snapshot] = None  # contents as taken at the last read at offset 0
        self.filter: Filter = []
        self.watcher: Optional[Watcher] = None
        self.pending: Optional[tuple[int, int]] = None  # (tag, count) of a blocked event read

    @property
    def is_dir(self) -> bool:
        return self.path == QROOT


class StyxSession:
    """One Styx connection's state: fids, blocked event reads, negotiated msize."""

    def __init__(self, registry: Store, started: int,
                 listings: Optional[Listings] = None) -> None:
        """``started`` is the time (seconds) every file reports as atime/mtime.

        ``listings`` shares snapshots with other sessions of the same registry.
        """
        self.registry = registry
        self.started = started
        self.listings = listings if listings is not None else Listings(registry)
        self.held_bytes = 0  # bytes of the distinct snapshots this session's fids hold
        self._held: dict[int, list] = {}  # id(snapshot) -> [snapshot, fids holding it]
        self.msize = 0  # 0 until a Tversion succeeds
        self.fids: dict[int, _Fid] = {}
        self.pending: dict[int, _Fid] = {}  # tag of a blocked event read -> its fid
        self._out: list[ninep.RMessage] = []
        self._handlers: dict[type, Callable[..., Optional[ninep.RMessage]]] = {
            ninep.Tversion: self._version, ninep.Tauth: self._auth,
            ninep.Tattach: self._attach, ninep.Tflush: self._flush,
            ninep.Twalk: self._walk, ninep.Topen: self._open,
            ninep.Tcreate: self._create, ninep.Tread: self._read,
            ninep.Twrite: self._write, ninep.Tclunk: self._clunk,
            ninep.Tremove: self._remove, ninep.Tstat: self._stat,
            ninep.Twstat: self._wstat,
        }

    # -- the interface -----------------------------------------------------------

    def handle(self, msg: ninep.Message) -> list[ninep.RMessage]:
        """Apply one request; the replies it causes now, in order.

        ``NinepError`` if ``msg`` is not a T-message: the peer is broken and
        the connection should be closed.
        """
        handler = self._handlers.get(type(msg))
        if handler is None:
            raise ninep.NinepError("not a T-message", type(msg).__name__)
        try:
            if self.msize == 0 and not isinstance(msg, ninep.Tversion):
                raise _Refused(ENOVERSION)
            reply = handler(msg)
        except (_Refused, RegistryError) as err:
            reply = ninep.Rerror(msg.tag, str(err))
        if reply is not None:
            self._out.append(reply)
        return self._take()

    def changed(self) -> list[ninep.RMessage]:
        """The registry changed: answers to the event reads that waited for it."""
        for tag, fid in list(self.pending.items()):
            assert fid.watcher is not None and fid.pending is not None
            seen = fid.watcher.poll()
            if seen is not None:
                count = fid.pending[1]
                del self.pending[tag]
                fid.pending = None
                self._out.append(ninep.Rread(tag, _event_line(seen, count)))
        return self._take()

    def close(self) -> None:
        """The connection is gone: abort pending reads unanswered, clunk every fid."""
        self._reset()
        self._out.clear()

    def encode(self, reply: ninep.RMessage) -> bytes:
        """One frame for ``reply``; a reply over msize becomes Inferno's Rerror."""
        limit = self.msize or MAX_MSIZE
        try:
            return ninep.encode(reply, limit)
        except ValueError:
            return ninep.encode(ninep.Rerror(reply.tag, EBIGREPLY), limit)

    def _take(self) -> list[ninep.RMessage]:
        out, self._out = self._out, []
        return out

    def _reset(self) -> None:
        """Abort pending reads unanswered and clunk every fid (version(5))."""
        self.pending.clear()
        fids, self.fids = self.fids, {}
        for fid in fids.values():
            self._forget(fid)

    # -- the tree --------------------------------------------------------------

    def _service(self, path: int) -> Optional[Service]:
        return self.registry.by_id(path >> _SHIFT) if path & _MASK == QSVC else None

    def _dirent(self, path: int) -> Stat:
        """The directory entry of path; ``file does not exist`` once a service is gone."""
        name, mode, uid = self._entry(path)
        return Stat(0, 0, self._qid(path), mode, self.started, self.started, 0, name, uid, uid,
                    "")

    def _entry(self, path: int) -> tuple[str, int, str]:
        """Name, mode and owner (also the group) of path, as :meth:`_dirent` gives them."""
        if path in _STATIC:
            name, mode = _STATIC[path]
            return name, mode, _REGISTRY_USER
        svc = self._service(path)
        if svc is None:
            raise _Refused(ENOTFOUND)
        return svc.name or "", 0o644, svc.owner

    def _qid(self, path: int) -> Qid:
        """The qid of :meth:`_dirent` without the rest (a walk needs only that)."""
        if path in _STATIC:
            if path == QROOT:
                return Qid(QTDIR, self.registry.version, path)
            return Qid(QTFILE, 0, path)
        svc = self._service(path)
        if svc is None:
            raise _Refused(ENOTFOUND)
        return Qid(QTFILE, svc.vers & 0xFFFFFFFF, path)

    def _walk1(self, path: int, name: str) -> int:
        if path != QROOT:  # the only directory
            self._qid(path)  # ``file does not exist`` once a service is gone
            raise _Refused(ENOTDIR)
        if name == "..":
            return QROOT
        if name in _BY_NAME:
            return _BY_NAME[name]
        svc = self.registry.get(name)
        if svc is None:
            raise _Refused(ENOTFOUND)
        return _service_path(svc)

    def _fid(self, number: int) -> _Fid:
        fid = self.fids.get(number)
        if fid is None:
            raise _Refused(EBADFID)
        return fid

    def _new_fid(self, number: int, path: int, uname: str) -> None:
        if len(self.fids) >= MAX_FIDS:
            raise _Refused(ENOFIDS)
        self.fids[number] = _Fid(path, uname)

    def _hold(self, fid: _Fid, snap: Optional[_Snapshot]) -> None:
        """Make ``snap`` the fid's snapshot, keeping the session's byte count."""
        old = fid.snap
        if old is not None:
            entry = self._held[id(old)]
            entry[1] -= 1
            if entry[1] == 0:
                del self._held[id(old)]
                self.held_bytes -= len(old.data)
        fid.snap = snap
        if snap is not None:
            held = self._held.get(id(snap))
            if held is None:
                self._held[id(snap)] = [snap, 1]
                self.held_bytes += len(snap.data)
            else:
                held[1] += 1

    def _take_snapshot(self, fid: _Fid, key: Hashable, make: Callable[[], _Snapshot]) -> _Snapshot:
        """A read at offset 0: the fid's new snapshot, within the session's bound."""
        self._hold(fid, None)
        snap = self.listings.get(key, make)
        if (id(snap) not in self._held and self.held_bytes
                and self.held_bytes + len(snap.data) > MAX_HELD_BYTES):
            raise _Refused(EHELD)
        self._hold(fid, snap)
        return snap

    def _forget(self, fid: _Fid) -> None:
        """A fid is clunked: unregister what it created, honour ORCLOSE."""
        self._hold(fid, None)
        if fid.pending is not None:
            self.pending.pop(fid.pending[0], None)
            fid.pending = None
        orclose = fid.mode is not None and bool(fid.mode & ORCLOSE)
        if fid.created is not None:
            self.registry.release(fid.created, force=orclose)
        elif orclose and (svc := self._service(fid.path)) is not None:
            try:
                self.registry.remove(svc, fid.uname)
            except RegistryError:
                pass  # not the owner: like any remove, it fails quietly on close

    def _fail_pending_read(self, fid: _Fid) -> None:
        """A clunk or remove ends a blocked read on the fid with an error, not silence."""
        if fid.pending is not None:
            self._out.append(ninep.Rerror(fid.pending[0], EBADFID))

    # -- messages --------------------------------------------------------------

    def _version(self, msg: ninep.Tversion) -> ninep.RMessage:
        self._reset()
        self.msize = 0
        msize = min(msg.msize, MAX_MSIZE)
        if msize < MIN_MSIZE:
            raise _Refused(ESMALL)
        if not msg.version.startswith(ninep.VERSION):
            return ninep.Rversion(msg.tag, msize, "unknown")
        self.msize = msize
        return ninep.Rversion(msg.tag, msize, ninep.VERSION)

    def _auth(self, msg: ninep.Tauth) -> ninep.RMessage:
        raise _Refused(ENOAUTH)

    def _attach(self, msg: ninep.Tattach) -> ninep.RMessage:
        if msg.fid in self.fids:
            raise _Refused(EINUSE)
        self._new_fid(msg.fid, QROOT, msg.uname)
        return ninep.Rattach(msg.tag, self._qid(QROOT))

    def _flush(self, msg: ninep.Tflush) -> ninep.RMessage:
        fid = self.pending.pop(msg.oldtag, None)
        if fid is not None:
            fid.pending = None  # the flushed read gets no reply
        return ninep.Rflush(msg.tag)

    def _walk(self, msg: ninep.Twalk) -> ninep.RMessage:
        fid = self._fid(msg.fid)
        if fid.mode is not None:
            raise _Refused(EOPEN)
        if msg.newfid != msg.fid and msg.newfid in self.fids:
            raise _Refused(EINUSE)
        path, qids = fid.path, list[Qid]()
        for i, name in enumerate(msg.wnames):
            try:
                path = self._walk1(path, name)
            except _Refused:
                if i == 0:
                    raise
                return ninep.Rwalk(msg.tag, tuple(qids))  # stopped early: newfid untouched
            qids.append(self._qid(path))
        if msg.newfid == msg.fid:
            fid.path = path
        else:
            self._new_fid(msg.newfid, path, fid.uname)
        return ninep.Rwalk(msg.tag, tuple(qids))

    def _open(self, msg: ninep.Topen) -> ninep.RMessage:
        fid = self._fid(msg.fid)
        if fid.mode is not None:
            raise _Refused(EOPEN)
        _, mode, uid = self._entry(fid.path)
        if msg.mode & ~(OTRUNC | ORCLOSE) > ORDWR:
            raise _Refused(EBADARG)
        if msg.mode & 3 != OREAD and fid.is_dir:
            raise _Refused(EPERM)
        if not openok(fid.uname, msg.mode, mode, uid, uid):
            raise _Refused(EPERM)
        if msg.mode & ORCLOSE and fid.is_dir:
            raise _Refused(EPERM)  # the root cannot be removed
        if fid.path == QNEW:
            fid.created = self.registry.create(fid.uname)
            fid.path = _service_path(fid.created)
        elif fid.path == QEVENT:
            fid.watcher = self.registry.watch()
        fid.mode = msg.mode
        qid = Qid(QTDIR if fid.is_dir else QTFILE, 0, fid.path)
        return ninep.Ropen(msg.tag, qid, min(MAX_IOUNIT, self.msize - IOHDRSZ))

    def _create(self, msg: ninep.Tcreate) -> ninep.RMessage:
        raise _Refused(EPERM)

    def _read(self, msg: ninep.Tread) -> Optional[ninep.RMessage]:
        fid = self._fid(msg.fid)
        if fid.mode is None:
            raise _Refused(ENOTOPEN)
        if fid.mode & 3 not in (OREAD, ORDWR):
            raise _Refused(EACCESS)
        if msg.count > self.msize - IOHDRSZ:
            raise _Refused(ECOUNT)
        if msg.offset >= 1 << 63:  # negative to Inferno's signed offsets
            raise _Refused(EOFFSET)
        if fid.is_dir:
            return ninep.Rread(msg.tag, self._read_dir(fid, msg.offset, msg.count))
        if fid.path == QEVENT:
            return self._read_event(fid, msg)
        if msg.offset == 0 or fid.snap is None:
            self._take_snapshot(fid, self._key(fid), lambda: _Snapshot(self._contents(fid)))
        assert fid.snap is not None
        return ninep.Rread(msg.tag, fid.snap.data[msg.offset:msg.offset + msg.count])

    def _key(self, fid: _Fid) -> Hashable:
        """What makes two fids' contents equal at one registry version."""
        if fid.path == QFIND:
            return (QFIND, tuple(fid.filter))
        return fid.path

    def _contents(self, fid: _Fid) -> bytes:
        if fid.path == QINDEX:
            text = self.registry.index()
        elif fid.path == QFIND:
            text = self.registry.find(fid.filter)
        else:
            svc = self._service(fid.path)
            text = svc.line if svc is not None and svc.name is not None else ""
        return text.encode("utf-8")

    def _read_dir(self, fid: _Fid, offset: int, count: int) -> bytes:
        """Whole entries from offset; the listing is taken at offset 0."""
        if offset == 0 or fid.snap is None:
            self._take_snapshot(fid, QROOT, self._directory)
        snap = fid.snap
        assert snap is not None and snap.starts is not None
        starts = snap.starts  # entry i is data[starts[i]:starts[i + 1]]
        first = bisect.bisect_left(starts, offset)
        if first >= len(starts) - 1:
            return b""
        end = bisect.bisect_right(starts, starts[first] + count) - 1  # whole entries only
        return snap.data[starts[first]:starts[max(first, end)]]

    def _directory(self) -> _Snapshot:
        paths = [*_LISTED, *(_service_path(svc) for svc in self.registry.services())]
        try:
            entries = [self._dirent(path).encode() for path in paths]
        except ValueError:  # a service name too long for a directory entry
            raise _Refused(EBIGREPLY) from None
        starts, pos = [], 0
        for entry in entries:
            starts.append(pos)
            pos += len(entry)
        starts.append(pos)
        return _Snapshot(b"".join(entries), starts)

    def _read_event(self, fid: _Fid, msg: ninep.Tread) -> Optional[ninep.RMessage]:
        assert fid.watcher is not None
        if fid.pending is not None:
            raise _Refused(ECONCURRENT)
        if msg.tag in self.pending:
            raise _Refused(ETAGINUSE)
        version = fid.watcher.poll()
        if version is not None:
            return ninep.Rread(msg.tag, _event_line(version, msg.count))
        fid.pending = (msg.tag, msg.count)
        self.pending[msg.tag] = fid
        return None  # answered by _changed, or never if flushed

    def _write(self, msg: ninep.Twrite) -> ninep.RMessage:
        fid = self._fid(msg.fid)
        if fid.mode is None:
            raise _Refused(ENOTOPEN)
        if fid.is_dir:
            raise _Refused(EPERM)
        if fid.mode & 3 not in (OWRITE, ORDWR):
            raise _Refused(EACCESS)
        if msg.offset >= 1 << 63:
            raise _Refused(EOFFSET)
        text = msg.data.decode("utf-8", "replace")
        if fid.path == QFIND:
            fid.filter = parse_filter(text)
        elif (svc := self._service(fid.path)) is not None:
            self.registry.write(svc, text)
        else:
            raise RegistryError(GONE)
        return ninep.Rwrite(msg.tag, len(msg.data))

    def _clunk(self, msg: ninep.Tclunk) -> ninep.RMessage:
        fid = self._fid(msg.fid)
        del self.fids[msg.fid]
        self._fail_pending_read(fid)
        self._forget(fid)
        return ninep.Rclunk(msg.tag)

    def _remove(self, msg: ninep.Tremove) -> ninep.RMessage:
        fid = self._fid(msg.fid)
        del self.fids[msg.fid]  # remove clunks the fid even when it fails
        self._fail_pending_read(fid)
        try:
            if fid.path in _STATIC:
                raise _Refused(EPERM)
            svc = self._service(fid.path)
            if svc is None:
                raise _Refused(ENOTFOUND)
            self.registry.remove(svc, fid.uname)
        finally:
            self._forget(fid)
        return ninep.Rremove(msg.tag)

    def _stat(self, msg: ninep.Tstat) -> ninep.RMessage:
        return ninep.Rstat(msg.tag, self._dirent(self._fid(msg.fid).path))

    def _wstat(self, msg: ninep.Twstat) -> ninep.RMessage:
        raise _Refused(EPERM)
