"""The registry tree served over Styx (9P2000), as Inferno exports it.

A real registry is reached over the network through ``listen -A
'tcp!*!registry' {export /mnt/registry &}`` (registry4.md §7); this frontend
serves the same tree from gevent so that an Inferno machine can ``mount`` it
and regmgr's Styx client can use it:

* ``/`` holds ``new``, ``index``, ``find``, ``event`` and one file per
  named service; qid paths, modes and owners are ``ndb/registry``'s.
* Error texts are Inferno's: those of ``styxservers(2)`` for protocol
  misuse (``bad fid``, ``file does not exist``...) and the registry's own.
* Each connection is one session with its own fids; the uname of Tattach
  owns the services created through that fid. When the connection drops,
  every fid is clunked, so its non-persistent services disappear.

One greenlet per connection reads and answers requests in order; replies go
through a per-connection outbox so that an event read, which may be
answered later from another connection's write, never blocks the session
and never interleaves a half-written frame. Bytes that are not 9P2000
close that connection only.
"""
from __future__ import annotations

import bisect
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Optional

import gevent
from gevent.event import Event
from gevent.server import StreamServer
from gevent.socket import socket as GeventSocket

from .. import ninep
from ..errors import RegistryError
from ..ninep import (
    DMDIR, IOHDRSZ, ORCLOSE, ORDWR, OREAD, OTRUNC, OWRITE, QTDIR, QTFILE,
    Qid, Stat,
)
from .state import GONE, Filter, Registry, Service, Watcher, parse_filter

log = logging.getLogger("regmgr.server")

__all__ = ["StyxServer", "MAX_MSIZE", "MAX_IOUNIT"]

#: Largest msize offered: Inferno's export allows 64 KiB of data plus the header.
MAX_MSIZE = 65536 + IOHDRSZ
#: Smallest msize accepted (styxservers refuses less).
MIN_MSIZE = 256
#: iounit in Ropen, as export reports for the registry's mount.
MAX_IOUNIT = 8192
#: Reply bytes queued for a client before its session stops reading requests.
_BACKLOG = 1 << 20

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


class _Fid:
    """What one client fid points at, and its state once opened."""

    __slots__ = ("path", "uname", "mode", "created", "data", "dir", "filter", "watcher", "pending")

    def __init__(self, path: int, uname: str) -> None:
        self.path = path
        self.uname = uname
        self.mode: Optional[int] = None  # open mode (with ORCLOSE) once open
        self.created: Optional[Service] = None  # the service this fid opened on ``new``
        self.data: Optional[bytes] = None  # contents as computed at the last read at offset 0
        self.dir: Optional[tuple[list[bytes], list[int]]] = None  # entries and their offsets
        self.filter: Filter = []
        self.watcher: Optional[Watcher] = None
        self.pending: Optional[tuple[int, int]] = None  # (tag, count) of a blocked event read

    @property
    def is_dir(self) -> bool:
        return self.path == QROOT


class _Outbox:
    """Frames for one client, written in order by their own greenlet."""

    def __init__(self, sock: GeventSocket) -> None:
        self._sock = sock
        self._frames: deque[bytes] = deque()
        self._queued = 0
        self._ready = Event()
        self._room = Event()
        self._room.set()
        self.closed = False
        self._writer = gevent.spawn(self._run)

    def put(self, frame: bytes) -> None:
        if self.closed:
            return
        self._frames.append(frame)
        self._queued += len(frame)
        if self._queued > _BACKLOG:
            self._room.clear()
        self._ready.set()

    def wait_for_room(self) -> None:
        """Block while the client is not reading its replies."""
        self._room.wait()

    def _run(self) -> None:
        try:
            while True:
                self._ready.wait()
                self._ready.clear()
                while self._frames:
                    frame = self._frames.popleft()
                    self._queued -= len(frame)
                    self._sock.sendall(frame)
                    if self._queued <= _BACKLOG:
                        self._room.set()
        except OSError as err:
            log.debug("styx: write failed: %s", err)
        finally:
            self.close()
            self._sock.close()  # wakes the reader

    def close(self) -> None:
        """Drop what is queued and stop; never blocks."""
        self.closed = True
        self._frames.clear()
        self._room.set()
        if self._writer is not gevent.getcurrent():
            self._writer.kill(block=False)


class _Session:
    """One Styx connection: its fids, its pending event reads, its replies."""

    def __init__(self, frontend: StyxServer, sock: GeventSocket, peer: str) -> None:
        self.registry = frontend.registry
        self.started = frontend.started
        self.peer = peer
        self.sock = sock
        self.msize = 0  # 0 until a Tversion succeeds
        self.decoder = ninep.Decoder(MAX_MSIZE)
        self.fids: dict[int, _Fid] = {}
        self.pending: dict[int, _Fid] = {}  # tag of a blocked event read -> its fid
        self.outbox = _Outbox(sock)
        self._handlers: dict[type, Callable[..., Optional[ninep.RMessage]]] = {
            ninep.Tversion: self._version, ninep.Tauth: self._auth,
            ninep.Tattach: self._attach, ninep.Tflush: self._flush,
            ninep.Twalk: self._walk, ninep.Topen: self._open,
            ninep.Tcreate: self._create, ninep.Tread: self._read,
            ninep.Twrite: self._write, ninep.Tclunk: self._clunk,
            ninep.Tremove: self._remove, ninep.Tstat: self._stat,
            ninep.Twstat: self._wstat,
        }

    # -- connection ------------------------------------------------------------

    def run(self) -> None:
        """Serve requests until the client hangs up or breaks the protocol."""
        self.registry.subscribe(self._changed)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.decoder.feed(data)
                while (msg := self.decoder.next_message()) is not None:
                    self._handle(msg)
                    self.outbox.wait_for_room()
        except ninep.NinepError as err:
            log.info("styx %s: %s, closing", self.peer, err)
        except OSError as err:
            log.debug("styx %s: %s", self.peer, err)
        finally:
            self.registry.unsubscribe(self._changed)
            self._reset()
            self.outbox.close()
            self.sock.close()

    def _reset(self) -> None:
        """Abort pending reads unanswered and clunk every fid (version(5))."""
        self.pending.clear()
        fids, self.fids = self.fids, {}
        for fid in fids.values():
            self._forget(fid)

    def _handle(self, msg: ninep.Message) -> None:
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
            self._send(reply)

    def _send(self, reply: ninep.RMessage) -> None:
        limit = self.msize or MAX_MSIZE
        try:
            frame = ninep.encode(reply, limit)
        except ValueError:
            frame = ninep.encode(ninep.Rerror(reply.tag, EBIGREPLY), limit)
        self.outbox.put(frame)

    # -- the tree --------------------------------------------------------------

    def _service(self, path: int) -> Optional[Service]:
        return self.registry.by_id(path >> _SHIFT) if path & _MASK == QSVC else None

    def _dirent(self, path: int) -> Stat:
        """The directory entry of path; ``file does not exist`` once a service is gone."""
        if path in _STATIC:
            name, mode = _STATIC[path]
            vers = self.registry.version if path == QROOT else 0
            qid = Qid(QTDIR if mode & DMDIR else QTFILE, vers, path)
            uid = _REGISTRY_USER
        else:
            svc = self._service(path)
            if svc is None:
                raise _Refused(ENOTFOUND)
            name, mode, uid = svc.name or "", 0o644, svc.owner
            qid = Qid(QTFILE, svc.vers & 0xFFFFFFFF, path)
        return Stat(0, 0, qid, mode, self.started, self.started, 0, name, uid, uid, "")

    def _walk1(self, path: int, name: str) -> int:
        if not self._dirent(path).mode & DMDIR:
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

    def _forget(self, fid: _Fid) -> None:
        """A fid is clunked: unregister what it created, honour ORCLOSE."""
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
            self._send(ninep.Rerror(fid.pending[0], EBADFID))

    # -- change notification ---------------------------------------------------

    def _changed(self, version: int) -> None:
        """Registry listener: answer every blocked event read of this session."""
        for tag, fid in list(self.pending.items()):
            assert fid.watcher is not None and fid.pending is not None
            seen = fid.watcher.poll()
            if seen is not None:
                count = fid.pending[1]
                del self.pending[tag]
                fid.pending = None
                self._send(ninep.Rread(tag, _event_line(seen, count)))

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
        self.decoder.msize = msize
        return ninep.Rversion(msg.tag, msize, ninep.VERSION)

    def _auth(self, msg: ninep.Tauth) -> ninep.RMessage:
        raise _Refused(ENOAUTH)

    def _attach(self, msg: ninep.Tattach) -> ninep.RMessage:
        if msg.fid in self.fids:
            raise _Refused(EINUSE)
        self.fids[msg.fid] = _Fid(QROOT, msg.uname)
        return ninep.Rattach(msg.tag, self._dirent(QROOT).qid)

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
            qids.append(self._dirent(path).qid)
        if msg.newfid == msg.fid:
            fid.path = path
        else:
            self.fids[msg.newfid] = _Fid(path, fid.uname)
        return ninep.Rwalk(msg.tag, tuple(qids))

    def _open(self, msg: ninep.Topen) -> ninep.RMessage:
        fid = self._fid(msg.fid)
        if fid.mode is not None:
            raise _Refused(EOPEN)
        st = self._dirent(fid.path)
        if msg.mode & ~(OTRUNC | ORCLOSE) > ORDWR:
            raise _Refused(EBADARG)
        if msg.mode & 3 != OREAD and fid.is_dir:
            raise _Refused(EPERM)
        if not openok(fid.uname, msg.mode, st.mode, st.uid, st.gid):
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
        if msg.offset == 0 or fid.data is None:
            fid.data = self._contents(fid).encode("utf-8")
        return ninep.Rread(msg.tag, fid.data[msg.offset:msg.offset + msg.count])

    def _contents(self, fid: _Fid) -> str:
        if fid.path == QINDEX:
            return self.registry.index()
        if fid.path == QFIND:
            return self.registry.find(fid.filter)
        svc = self._service(fid.path)
        return svc.line if svc is not None and svc.name is not None else ""

    def _read_dir(self, fid: _Fid, offset: int, count: int) -> bytes:
        """Whole entries from offset; the listing is taken at offset 0."""
        if offset == 0 or fid.dir is None:
            paths = [*_LISTED, *(_service_path(svc) for svc in self.registry.services())]
            try:
                entries = [self._dirent(path).encode() for path in paths]
            except ValueError:  # a service name too long for a directory entry
                raise _Refused(EBIGREPLY) from None
            starts, pos = [], 0
            for entry in entries:
                starts.append(pos)
                pos += len(entry)
            fid.dir = (entries, starts)
        entries, starts = fid.dir
        out, size = [], 0
        for entry in entries[bisect.bisect_left(starts, offset):]:
            if size + len(entry) > count:
                break
            out.append(entry)
            size += len(entry)
        return b"".join(out)

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


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


class StyxServer:
    """Serve ``registry`` over Styx on one TCP port (0 picks an ephemeral port)."""

    def __init__(self, registry: Registry, host: str = "127.0.0.1", port: int = 6675) -> None:
        self.registry = registry
        self.host = host
        self.started = int(time.time())
        self._server = StreamServer((host, port), self._serve)
        self._clients: set[GeventSocket] = set()

    @property
    def port(self) -> int:
        port: int = self._server.server_port
        return port

    def start(self) -> None:
        """Bind and listen; ``OSError`` if the port is taken."""
        try:
            self._server.start()
        except OSError as err:
            raise OSError(err.errno, f"cannot listen on {self.host}:{self._server.address[1]} "
                                     f"(styx port): {err.strerror or err}") from err

    def stop(self) -> None:
        """Close the listener and every connection, as a dying registry does."""
        self._server.close()
        for sock in list(self._clients):
            sock.close()
        self._server.stop(timeout=1)

    def _serve(self, sock: GeventSocket, address: object) -> None:
        peer = _peer(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # replies are small frames
        self._clients.add(sock)
        log.debug("styx %s: connected", peer)
        try:
            _Session(self, sock, peer).run()
        finally:
            self._clients.discard(sock)
            log.debug("styx %s: closed", peer)
