"""One Styx (9P2000) session on one socket, shared by every call that uses it.

The :class:`~regmgr.connections.styx.Styx` transport runs every
registration, event stream, find and remove of a connection through one
:class:`Session`. It is the only place that touches the socket:

* a writer greenlet sends frames in the order calls were made, so a caller
  killed half-way can never leave a partial frame on the wire; the frames
  queued meanwhile go out in one send (a burst of registrations costs the
  registry fewer reads);
* a reader greenlet hands each reply to the call waiting on its tag;
* tags and fids are allocated and recycled here. A call cancelled while
  waiting (greenlet killed, ``gevent.Timeout``) sends Tflush, and its tag is
  reused only once the Rflush came back, as flush(5) requires;
* when the socket drops, every pending call fails at once with the same
  ``ConnectionError`` and :attr:`Session.dead` wakes the holders;
* a prober greenlet sends a Tstat of the root every ``probe_interval``
  seconds; ``probe_timeout`` seconds without its answer and without any
  other reply end the session like a drop (a hung registry, see
  :mod:`.liveness`): a registry still answering what was queued before the
  Tstat (100,000 registrations sent at once) is busy, not hung.
"""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Optional

import gevent
import gevent.socket
from gevent.event import AsyncResult, Event
from gevent.queue import Queue

from .. import ninep
from ..errors import TRANSIENT_ERRORS, ProtocolError, RegistryError, RegmgrError
from .liveness import abort, keepalive

__all__ = ["Session", "Call", "ROOT_FID", "expect"]

log = logging.getLogger("regmgr")

#: The fid attached to the registry's root directory.
ROOT_FID = 0

Hook = Callable[[ninep.RMessage], None]


def expect(reply: ninep.RMessage, kind: type, label: str) -> None:
    """Raise the registry's Rerror as RegistryError, and any other surprise as ProtocolError."""
    if isinstance(reply, ninep.Rerror):
        raise RegistryError(reply.ename)
    if not isinstance(reply, kind):
        raise ProtocolError(f"{label}: expected {kind.__name__}", reply)


class Call:
    """One request in flight: its tag, and its reply (or a hook run on the reply)."""

    __slots__ = ("tag", "result", "hook", "cancelled")

    def __init__(self, tag: int, hook: Optional[Hook] = None) -> None:
        self.tag = tag
        self.result: AsyncResult = AsyncResult()
        self.hook = hook
        self.cancelled = False


class Session:
    """A versioned and attached 9P2000 connection; see :meth:`connect`."""

    def __init__(self, sock: gevent.socket.socket, label: str, msize: int) -> None:
        self.label = label
        self.msize = msize
        self.error: Optional[Exception] = None
        #: T-messages sent but Tversion: each is one request/reply round trip.
        self.sent = 0
        #: Set when the session is gone (dropped, broken or closed).
        self.dead = Event()
        self._sock = sock
        self._decoder = ninep.Decoder(msize)
        self._calls: dict[int, Call] = {}
        self._free_tags: list[int] = []
        self._next_tag = 0
        self._free_fids: list[int] = []
        self._next_fid = ROOT_FID + 1
        self._users = 0
        self._frames: Queue = Queue()
        self._writer = gevent.spawn(self._write_loop)
        self._reader = gevent.spawn(self._read_loop)
        self._prober: Optional[gevent.Greenlet] = None
        self._heard = time.monotonic()  # when the registry last sent anything

    @classmethod
    def connect(cls, host: str, port: int, user: str, msize: int, timeout: float,
                probe_interval: float, probe_timeout: float) -> Session:
        """Dial, agree on the version and msize, attach ``user`` to the root, start probing."""
        label = f"styx {host}:{port}"
        try:
            sock = gevent.socket.create_connection((host, port), timeout=timeout)
        except OSError as err:
            raise ConnectionError(f"{label}: {err or type(err).__name__}") from err
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small frames, no Nagle delay
        keepalive(sock, probe_interval, probe_timeout)
        session = cls(sock, label, msize)
        try:
            session._handshake(user, timeout)
        except BaseException:
            session.close()
            raise
        session._prober = gevent.spawn(session._probe_loop, probe_interval, probe_timeout)
        return session

    def _probe_loop(self, interval: float, timeout: float) -> None:
        """Tstat the root every ``interval`` s; ``timeout`` s without a reply ends the session."""
        while self.error is None:
            gevent.sleep(interval)
            try:
                call = self.start(lambda tag: ninep.Tstat(tag, ROOT_FID))
                sent = time.monotonic()
                while not call.result.ready():
                    left = max(sent, self._heard) + timeout - time.monotonic()
                    if left <= 0:
                        self.cancel(call)
                        raise ConnectionError(f"no reply in {timeout} s")
                    call.result.wait(left)
                expect(self.wait(call), ninep.Rstat, self.label)
            except TRANSIENT_ERRORS as err:
                self._die(ConnectionError(f"{self.label}: probe failed: {err}"))

    def _handshake(self, user: str, timeout: float) -> None:
        call = Call(ninep.NOTAG)
        self._calls[ninep.NOTAG] = call
        self._frames.put(ninep.encode(ninep.Tversion(ninep.NOTAG, self.msize, ninep.VERSION)))
        reply = self.wait(call, timeout)
        expect(reply, ninep.Rversion, self.label)
        assert isinstance(reply, ninep.Rversion)
        if reply.version != ninep.VERSION or not ninep.IOHDRSZ < reply.msize <= self.msize:
            raise ProtocolError(f"{self.label}: cannot agree on 9P2000",
                                (reply.version, reply.msize))
        self.msize = self._decoder.msize = reply.msize
        attach = self.call(lambda tag: ninep.Tattach(tag, ROOT_FID, ninep.NOFID, user, ""), timeout)
        expect(attach, ninep.Rattach, self.label)

    # -- holders ---------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self.dead.is_set()

    def hold(self) -> None:
        """One more user (a call, a stream, a registration) needs the session."""
        self._users += 1

    def release(self) -> None:
        """A user is done; the last one closes the socket (which clunks every fid)."""
        self._users -= 1
        if self._users <= 0:
            self.close()

    def close(self) -> None:
        """End the session now; never blocks."""
        self._die(ConnectionError(f"{self.label}: session closed"), graceful=True)

    # -- calls -----------------------------------------------------------------

    def start(self, build: Callable[[int], ninep.TMessage], hook: Optional[Hook] = None) -> Call:
        """Send the message ``build(tag)`` and return its call without waiting."""
        if self.error is not None:
            raise self.error
        tag = self._alloc_tag()
        call = Call(tag, hook)
        try:
            frame = ninep.encode(build(tag), self.msize)
        except BaseException:
            self._free_tags.append(tag)
            raise
        self._calls[tag] = call
        self._frames.put(frame)
        self.sent += 1
        return call

    def wait(self, call: Call, timeout: Optional[float] = None) -> ninep.RMessage:
        """The reply to ``call``; a cancelled or timed-out wait flushes the request."""
        try:
            call.result.wait(timeout)
        except BaseException:
            self.cancel(call)
            raise
        if not call.result.ready():
            self.cancel(call)
            raise ConnectionError(f"{self.label}: no reply in {timeout} s")
        self._done(call)
        reply: ninep.RMessage = call.result.get()
        return reply

    def call(self, build: Callable[[int], ninep.TMessage],
             timeout: Optional[float] = None) -> ninep.RMessage:
        return self.wait(self.start(build), timeout)

    def post(self, build: Callable[[int], ninep.TMessage], on_reply: Hook) -> None:
        """Send ``build(tag)`` without waiting; the reader calls ``on_reply(reply)``.

        ``on_reply`` runs in the reader greenlet: it must not block or raise.
        If the session dies first it is never called.
        """
        def hook(reply: ninep.RMessage) -> None:
            self._release(call)
            on_reply(reply)

        call = self.start(build, hook)

    def cancel(self, call: Call) -> None:
        """Tflush ``call`` if unanswered; its tag is freed when the Rflush arrives."""
        if call.cancelled:
            return
        if call.result.ready() or self.error is not None:
            self._done(call)
            return
        call.cancelled = True

        def flushed(reply: ninep.RMessage) -> None:
            self._release(call)
            self._release(flush)

        flush = self.start(lambda tag: ninep.Tflush(tag, call.tag), flushed)

    def clunk(self, fid: int) -> None:
        """Forget ``fid`` without waiting; it is reused once the server answered."""
        if self.error is not None:
            return

        def clunked(reply: ninep.RMessage) -> None:
            self._release(clunk)
            self._free_fids.append(fid)

        clunk = self.start(lambda tag: ninep.Tclunk(tag, fid), clunked)

    def alloc_fid(self) -> int:
        if self._free_fids:
            return self._free_fids.pop()
        if self._next_fid >= ninep.NOFID:
            raise RegmgrError(f"{self.label}: out of fids")
        self._next_fid += 1
        return self._next_fid - 1

    def free_fid(self, fid: int) -> None:
        """``fid`` is known to be gone on the server (e.g. after Tremove)."""
        self._free_fids.append(fid)

    def _alloc_tag(self) -> int:
        if self._free_tags:
            return self._free_tags.pop()
        if self._next_tag >= ninep.NOTAG:
            raise RegmgrError(f"{self.label}: {ninep.NOTAG} requests in flight")
        self._next_tag += 1
        return self._next_tag - 1

    def _done(self, call: Call) -> None:
        if not call.cancelled:
            self._release(call)

    def _release(self, call: Call) -> None:
        if self._calls.get(call.tag) is call:
            del self._calls[call.tag]
            if call.tag != ninep.NOTAG:
                self._free_tags.append(call.tag)

    # -- the socket ------------------------------------------------------------

    def _die(self, error: Exception, graceful: bool = False) -> None:
        """Fail every call with ``error``; a session given up for dead is reset (see abort)."""
        if self.error is not None:
            return
        self.error = error
        calls, self._calls = self._calls, {}
        for call in calls.values():
            if call.hook is None and not call.result.ready():
                call.result.set_exception(error)
        self._frames.put(StopIteration)
        if graceful:
            self._sock.close()
        else:
            abort(self._sock)
        self.dead.set()
        for greenlet in (self._reader, self._writer, self._prober):
            if greenlet is not None and greenlet is not gevent.getcurrent():
                greenlet.kill(block=False)

    def _write_loop(self) -> None:
        try:
            for frame in self._frames:
                frames = [frame]
                while not self._frames.empty():  # everything queued meanwhile, in one send
                    frames.append(self._frames.get_nowait())
                if frames[-1] is StopIteration:
                    frames.pop()
                    self._sock.sendall(b"".join(frames))
                    return
                self._sock.sendall(b"".join(frames) if len(frames) > 1 else frame)
        except OSError as err:
            self._die(ConnectionError(f"{self.label}: {err or type(err).__name__}"))

    def _read_loop(self) -> None:
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    raise ConnectionError(f"{self.label}: closed by the registry")
                self._heard = time.monotonic()
                self._decoder.feed(data)
                while (msg := self._decoder.next_message()) is not None:
                    self._dispatch(msg)
        except OSError as err:
            error = err if isinstance(err, ConnectionError) else ConnectionError(
                f"{self.label}: {err or type(err).__name__}")
            self._die(error)
        except ProtocolError as err:
            self._die(err)

    def _dispatch(self, msg: ninep.Message) -> None:
        call = self._calls.get(msg.tag)
        if call is None or msg.TYPE % 2 == 0:  # a reply to nothing, or a T-message
            raise ProtocolError(f"{self.label}: unexpected message", msg)
        if call.hook is not None:
            call.hook(msg)  # type: ignore[arg-type]  # odd TYPE: an R-message
        elif not call.result.ready():
            call.result.set(msg)
