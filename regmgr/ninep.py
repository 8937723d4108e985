"""9P2000 (Styx), sans-I/O: message values in, bytes out, and back.

The registry is a Styx file server (registry4.md §7). This module only
converts between message values and bytes, so the Styx client and the
embedded server share one framing and one set of checks; nothing here
touches a socket or gevent (the model is h11).

* :func:`encode` turns a message into one frame.
* :class:`Decoder` is fed bytes in whatever chunks the network delivers
  and hands back complete messages.

Wire format (intro(5)): little-endian; a frame is ``size[4] type[1] tag[2]``
and the message's fields; a string is ``len[2]`` + UTF-8; data is
``count[4]`` + bytes; a qid is ``type[1] vers[4] path[8]``.

Errors follow whose fault it is:

* bytes from the peer that are not 9P2000 raise :class:`NinepError` (a
  :class:`~regmgr.errors.ProtocolError`): the connection is unusable.
* a value that cannot be encoded (integer out of range, string over 65535
  UTF-8 bytes, more than :data:`MAXWELEM` walk elements, frame over the
  given ``msize``) raises ``ValueError``, and a field of the wrong kind
  raises ``TypeError``: that is the caller's bug, not the peer's.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Optional, Protocol, TypeVar, Union, cast

from .errors import ProtocolError

__all__ = [
    "NOTAG", "NOFID", "OREAD", "OWRITE", "ORDWR", "OEXEC", "OTRUNC",
    "ORCLOSE", "QTDIR", "QTFILE", "DMDIR", "VERSION", "MAXWELEM", "IOHDRSZ",
    "NinepError", "Qid", "Stat", "encode_stat", "decode_stats",
    "Tversion", "Rversion", "Tauth", "Rauth", "Tattach", "Rattach", "Rerror",
    "Tflush", "Rflush", "Twalk", "Rwalk", "Topen", "Ropen", "Tcreate",
    "Rcreate", "Tread", "Rread", "Twrite", "Rwrite", "Tclunk", "Rclunk",
    "Tremove", "Rremove", "Tstat", "Rstat", "Twstat", "Rwstat",
    "TMessage", "RMessage", "Message", "encode", "Decoder",
]

NOTAG = 0xFFFF
NOFID = 0xFFFFFFFF
OREAD = 0
OWRITE = 1
ORDWR = 2
OEXEC = 3
OTRUNC = 0x10
ORCLOSE = 0x40
QTDIR = 0x80
QTFILE = 0
DMDIR = 0x80000000
VERSION = "9P2000"
#: Most path elements one Twalk may carry (and Rwalk may answer).
MAXWELEM = 16
#: Bytes of Twrite/Rread framing around the data: iounit = msize - IOHDRSZ.
IOHDRSZ = 24

_HEADER_SIZE = 7  # size[4] type[1] tag[2]


class NinepError(ProtocolError):
    """The peer sent bytes that are not a valid 9P2000 message."""


class _Reader:
    """Cursor over one frame (or stat entry) that refuses to read past it."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise NinepError("data truncated", self._data[:64])
        chunk = self._data[self._pos:end]
        self._pos = end
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "little")

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def end(self) -> None:
        if not self.at_end():
            raise NinepError("trailing bytes in message", self._data[self._pos:][:64])


class _Field(Protocol):
    """How one field is written and read; layouts are tuples of these."""

    def put(self, out: bytearray, value: Any, name: str) -> None: ...

    def get(self, r: _Reader) -> Any: ...


class _UInt:
    def __init__(self, size: int) -> None:
        self.size = size

    def put(self, out: bytearray, value: Any, name: str) -> None:
        if not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not 0 <= value < 1 << (8 * self.size):
            raise ValueError(f"{name}={value} does not fit in {self.size} bytes")
        out += value.to_bytes(self.size, "little")

    def get(self, r: _Reader) -> int:
        return r.uint(self.size)


_U8, _U16, _U32, _U64 = _UInt(1), _UInt(2), _UInt(4), _UInt(8)


class _String:
    def put(self, out: bytearray, value: Any, name: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise ValueError(f"{name} is {len(raw)} UTF-8 bytes, over 65535")
        out += len(raw).to_bytes(2, "little") + raw

    def get(self, r: _Reader) -> str:
        raw = r.take(r.uint(2))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise NinepError("invalid UTF-8 in string", raw[:64]) from None


class _Data:
    def put(self, out: bytearray, value: Any, name: str) -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
        raw = bytes(value)
        _U32.put(out, len(raw), f"len({name})")
        out += raw

    def get(self, r: _Reader) -> bytes:
        return r.take(r.uint(4))


class _QidField:
    def put(self, out: bytearray, value: Any, name: str) -> None:
        if not isinstance(value, Qid):
            raise TypeError(f"{name} must be a Qid, not {type(value).__name__}")
        _U8.put(out, value.type, f"{name}.type")
        _U32.put(out, value.vers, f"{name}.vers")
        _U64.put(out, value.path, f"{name}.path")

    def get(self, r: _Reader) -> Qid:
        return Qid(r.uint(1), r.uint(4), r.uint(8))


class _WalkArray:
    """``n[2]`` then n elements, n <= MAXWELEM (Twalk names, Rwalk qids)."""

    def __init__(self, element: _Field) -> None:
        self.element = element

    def put(self, out: bytearray, value: Any, name: str) -> None:
        if not isinstance(value, tuple):
            raise TypeError(f"{name} must be a tuple, not {type(value).__name__}")
        if len(value) > MAXWELEM:
            raise ValueError(f"{name} has {len(value)} elements, over MAXWELEM={MAXWELEM}")
        out += len(value).to_bytes(2, "little")
        for i, item in enumerate(value):
            self.element.put(out, item, f"{name}[{i}]")

    def get(self, r: _Reader) -> tuple[Any, ...]:
        n = r.uint(2)
        if n > MAXWELEM:
            raise NinepError(f"walk of more than MAXWELEM={MAXWELEM} elements", n)
        return tuple(self.element.get(r) for _ in range(n))


class _StatField:
    """A stat as Rstat and Twstat carry it: an extra ``n[2]``, then the stat."""

    def put(self, out: bytearray, value: Any, name: str) -> None:
        if not isinstance(value, Stat):
            raise TypeError(f"{name} must be a Stat, not {type(value).__name__}")
        raw = value.encode()
        if len(raw) > 0xFFFF:
            raise ValueError(f"{name} is {len(raw)} bytes, over 65535")
        out += len(raw).to_bytes(2, "little") + raw

    def get(self, r: _Reader) -> Stat:
        return Stat.decode(r.take(r.uint(2)))


_STR, _DATA, _QID = _String(), _Data(), _QidField()
_Layout = tuple[tuple[str, _Field], ...]


def _put_fields(out: bytearray, obj: object, layout: _Layout) -> None:
    for name, codec in layout:
        codec.put(out, getattr(obj, name), name)


def _get_fields(r: _Reader, layout: _Layout) -> list[Any]:
    return [codec.get(r) for _, codec in layout]


@dataclass(frozen=True)
class Qid:
    """The server's unique id of a file: type (QTDIR...), version, path."""

    type: int
    vers: int
    path: int


@dataclass(frozen=True)
class Stat:
    """A file's directory entry (stat(5)), as Tstat returns and Twstat sets.

    For Twstat, "don't change" is all-ones integers and empty strings.
    """

    type: int
    dev: int
    qid: Qid
    mode: int
    atime: int
    mtime: int
    length: int
    name: str
    uid: str
    gid: str
    muid: str

    def encode(self) -> bytes:
        """The entry with its own ``size[2]`` prefix, as a directory read holds it."""
        body = bytearray()
        _put_fields(body, self, _STAT_LAYOUT)
        if len(body) > 0xFFFF:
            raise ValueError(f"stat is {len(body)} bytes, over 65535")
        return len(body).to_bytes(2, "little") + bytes(body)

    @classmethod
    def decode(cls, data: bytes) -> Stat:
        """Exactly one entry (with its ``size[2]``); anything else is a NinepError."""
        r = _Reader(bytes(data))
        stat = _read_stat(r)
        r.end()
        return stat


_STAT_LAYOUT: _Layout = (
    ("type", _U16), ("dev", _U32), ("qid", _QID), ("mode", _U32),
    ("atime", _U32), ("mtime", _U32), ("length", _U64), ("name", _STR),
    ("uid", _STR), ("gid", _STR), ("muid", _STR),
)


def _read_stat(r: _Reader) -> Stat:
    """One ``size[2]``-prefixed entry, which must use exactly its size."""
    body = _Reader(r.take(r.uint(2)))
    stat = Stat(*_get_fields(body, _STAT_LAYOUT))
    body.end()
    return stat


def encode_stat(st: Stat) -> bytes:
    """One directory entry for an Rread of a directory (same as ``st.encode()``)."""
    return st.encode()


def decode_stats(data: bytes) -> list[Stat]:
    """Split the data of a directory Rread into its stat entries."""
    r = _Reader(bytes(data))
    stats = []
    while not r.at_end():
        stats.append(_read_stat(r))
    return stats


@dataclass(frozen=True)
class _MessageBase:
    """Every message starts with its tag; TYPE and _LAYOUT come from _message."""

    TYPE: ClassVar[int]
    _LAYOUT: ClassVar[_Layout]

    tag: int


_M = TypeVar("_M", bound=_MessageBase)
_BY_TYPE: dict[int, type[_MessageBase]] = {}


def _message(type_code: int, *codecs: _Field) -> Callable[[type[_M]], type[_M]]:
    """Register a message class: its type byte and the codec of each field after tag."""

    def register(cls: type[_M]) -> type[_M]:
        names = [f.name for f in fields(cls)][1:]
        assert len(names) == len(codecs), cls
        cls.TYPE = type_code
        cls._LAYOUT = tuple(zip(names, codecs))
        _BY_TYPE[type_code] = cls
        return cls

    return register


@_message(100, _U32, _STR)
@dataclass(frozen=True)
class Tversion(_MessageBase):
    """Start a session: propose the largest frame (msize) and a protocol version."""

    msize: int
    version: str


@_message(101, _U32, _STR)
@dataclass(frozen=True)
class Rversion(_MessageBase):
    """The server's msize (<= the client's) and version, or ``unknown``."""

    msize: int
    version: str


@_message(102, _U32, _STR, _STR)
@dataclass(frozen=True)
class Tauth(_MessageBase):
    """Ask for an authentication fid; the registry needs none and refuses."""

    afid: int
    uname: str
    aname: str


@_message(103, _QID)
@dataclass(frozen=True)
class Rauth(_MessageBase):
    """The qid of the authentication file."""

    aqid: Qid


@_message(104, _U32, _U32, _STR, _STR)
@dataclass(frozen=True)
class Tattach(_MessageBase):
    """Bind fid to the root of tree aname as user uname (afid NOFID: no auth)."""

    fid: int
    afid: int
    uname: str
    aname: str


@_message(105, _QID)
@dataclass(frozen=True)
class Rattach(_MessageBase):
    """The root's qid."""

    qid: Qid


@_message(107, _STR)
@dataclass(frozen=True)
class Rerror(_MessageBase):
    """The request failed; ename is the server's error text."""

    ename: str


@_message(108, _U16)
@dataclass(frozen=True)
class Tflush(_MessageBase):
    """Abort the pending request with tag oldtag (e.g. a blocked event read)."""

    oldtag: int


@_message(109)
@dataclass(frozen=True)
class Rflush(_MessageBase):
    """oldtag is answered or abandoned; the tag may be reused."""


@_message(110, _U32, _U32, _WalkArray(_STR))
@dataclass(frozen=True)
class Twalk(_MessageBase):
    """Make newfid the file reached from fid by the tuple wnames (empty: clone fid)."""

    fid: int
    newfid: int
    wnames: tuple[str, ...]


@_message(111, _WalkArray(_QID))
@dataclass(frozen=True)
class Rwalk(_MessageBase):
    """One qid per name walked; fewer than asked means the walk stopped early."""

    qids: tuple[Qid, ...]


@_message(112, _U32, _U8)
@dataclass(frozen=True)
class Topen(_MessageBase):
    """Open fid with mode (OREAD... | OTRUNC | ORCLOSE)."""

    fid: int
    mode: int


@_message(113, _QID, _U32)
@dataclass(frozen=True)
class Ropen(_MessageBase):
    """The opened file's qid and iounit (largest atomic I/O; 0: msize - IOHDRSZ)."""

    qid: Qid
    iounit: int


@_message(114, _U32, _STR, _U32, _U8)
@dataclass(frozen=True)
class Tcreate(_MessageBase):
    """Create name in directory fid with perm, and open it with mode."""

    fid: int
    name: str
    perm: int
    mode: int


@_message(115, _QID, _U32)
@dataclass(frozen=True)
class Rcreate(_MessageBase):
    """The new file's qid and iounit."""

    qid: Qid
    iounit: int


@_message(116, _U32, _U64, _U32)
@dataclass(frozen=True)
class Tread(_MessageBase):
    """Read up to count bytes at offset."""

    fid: int
    offset: int
    count: int


@_message(117, _DATA)
@dataclass(frozen=True)
class Rread(_MessageBase):
    """The bytes read; empty means end of file."""

    data: bytes


@_message(118, _U32, _U64, _DATA)
@dataclass(frozen=True)
class Twrite(_MessageBase):
    """Write data at offset (the registry's service files ignore the offset)."""

    fid: int
    offset: int
    data: bytes


@_message(119, _U32)
@dataclass(frozen=True)
class Rwrite(_MessageBase):
    """How many bytes were written."""

    count: int


@_message(120, _U32)
@dataclass(frozen=True)
class Tclunk(_MessageBase):
    """Forget fid (for a fid opened on ``new``: unregister the service)."""

    fid: int


@_message(121)
@dataclass(frozen=True)
class Rclunk(_MessageBase):
    """fid is gone."""


@_message(122, _U32)
@dataclass(frozen=True)
class Tremove(_MessageBase):
    """Remove the file of fid and clunk fid (even if the remove fails)."""

    fid: int


@_message(123)
@dataclass(frozen=True)
class Rremove(_MessageBase):
    """The file is removed."""


@_message(124, _U32)
@dataclass(frozen=True)
class Tstat(_MessageBase):
    """Ask for the directory entry of fid."""

    fid: int


@_message(125, _StatField())
@dataclass(frozen=True)
class Rstat(_MessageBase):
    """The directory entry of the file."""

    stat: Stat


@_message(126, _U32, _StatField())
@dataclass(frozen=True)
class Twstat(_MessageBase):
    """Change the directory entry of fid (see :class:`Stat` for "don't change")."""

    fid: int
    stat: Stat


@_message(127)
@dataclass(frozen=True)
class Rwstat(_MessageBase):
    """The entry is changed."""


TMessage = Union[
    Tversion, Tauth, Tattach, Tflush, Twalk, Topen, Tcreate, Tread, Twrite,
    Tclunk, Tremove, Tstat, Twstat,
]
RMessage = Union[
    Rversion, Rauth, Rattach, Rerror, Rflush, Rwalk, Ropen, Rcreate, Rread,
    Rwrite, Rclunk, Rremove, Rstat, Rwstat,
]
Message = Union[TMessage, RMessage]


def encode(msg: Message, msize: Optional[int] = None) -> bytes:
    """The frame of msg; with msize, a frame larger than msize is a ValueError."""
    if not isinstance(msg, _MessageBase):
        raise TypeError(f"not a 9P message: {type(msg).__name__}")
    out = bytearray(4)  # size[4], filled in below
    out.append(msg.TYPE)
    _U16.put(out, msg.tag, "tag")
    _put_fields(out, msg, msg._LAYOUT)
    size = len(out)
    limit = 0xFFFFFFFF if msize is None else msize
    if size > limit:
        raise ValueError(f"{type(msg).__name__} is {size} bytes, over {limit}")
    out[0:4] = size.to_bytes(4, "little")
    return bytes(out)


def _decode_frame(frame: bytes) -> Message:
    r = _Reader(frame)
    r.take(4)  # size[4], already checked against len(frame)
    type_code = r.uint(1)
    cls = _BY_TYPE.get(type_code)
    if cls is None:
        raise NinepError("unknown message type", type_code)
    msg = cls(r.uint(2), *_get_fields(r, cls._LAYOUT))
    r.end()
    return cast(Message, msg)  # _BY_TYPE holds only Message classes


class Decoder:
    """Incremental 9P2000 decoder: bytes in any chunks, whole messages out.

    Call :meth:`feed` with whatever the socket returned, then
    :meth:`next_message` until it returns None (it needs more bytes)::

        decoder.feed(sock.recv(65536))
        while (msg := decoder.next_message()) is not None:
            handle(msg)

    Set :attr:`msize` once Tversion/Rversion has agreed on it; a frame
    larger than msize is refused as soon as its size field arrives. After a
    :class:`NinepError` the decoder stays broken: every later call raises
    that error again, and the caller should close the connection.
    """

    def __init__(self, msize: int = 8192) -> None:
        self.msize = msize
        self._buf = bytearray()
        self._error: Optional[NinepError] = None

    @property
    def msize(self) -> int:
        """Largest frame accepted, in bytes (the negotiated msize)."""
        return self._msize

    @msize.setter
    def msize(self, value: int) -> None:
        if value < _HEADER_SIZE:
            raise ValueError(f"msize {value} is below the {_HEADER_SIZE}-byte header")
        self._msize = value

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet returned; non-zero at EOF means a cut-off message."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer (any length, including none)."""
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_message(self) -> Optional[Message]:
        """The next complete message, or None until more bytes are fed."""
        if self._error is not None:
            raise self._error
        if len(self._buf) < 4:
            return None
        size = int.from_bytes(self._buf[:4], "little")
        try:
            if size < _HEADER_SIZE:
                raise NinepError("frame size below the 7-byte header", size)
            if size > self._msize:
                raise NinepError(f"frame size over msize {self._msize}", size)
            if len(self._buf) < size:
                return None
            frame = bytes(self._buf[:size])
            del self._buf[:size]
            return _decode_frame(frame)
        except NinepError as err:
            self._error = err
            raise
