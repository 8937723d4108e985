"""The 9P2000 codec: byte layout, round-trips, and refusal of malformed frames."""
from typing import get_args

import pytest
from hypothesis import given, settings, strategies as st

from regmgr.errors import ProtocolError
from regmgr.ninep import (
    DMDIR, IOHDRSZ, MAXWELEM, NOFID, NOTAG, OEXEC, ORCLOSE, ORDWR, OREAD,
    OTRUNC, OWRITE, QTDIR, QTFILE, VERSION, Decoder, Message, NinepError, Qid,
    Rattach, Rauth, Rclunk, Rcreate, Rerror, Rflush, Ropen, Rread, Rremove,
    Rstat, Rversion, Rwalk, Rwrite, Rwstat, Stat, Tattach, Tauth, Tclunk,
    Tcreate, Tflush, Topen, Tread, Tremove, Tstat, Tversion, Twalk, Twrite,
    Twstat, decode_stats, encode, encode_stat,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
text = st.text(max_size=20)
data = st.binary(max_size=64)
qids = st.builds(Qid, u8, u32, u64)
stats = st.builds(Stat, u16, u32, qids, u32, u32, u32, u64, text, text, text, text)

STRATEGIES = {
    Tversion: st.builds(Tversion, u16, u32, text),
    Rversion: st.builds(Rversion, u16, u32, text),
    Tauth: st.builds(Tauth, u16, u32, text, text),
    Rauth: st.builds(Rauth, u16, qids),
    Tattach: st.builds(Tattach, u16, u32, u32, text, text),
    Rattach: st.builds(Rattach, u16, qids),
    Rerror: st.builds(Rerror, u16, text),
    Tflush: st.builds(Tflush, u16, u16),
    Rflush: st.builds(Rflush, u16),
    Twalk: st.builds(Twalk, u16, u32, u32, st.lists(text, max_size=MAXWELEM).map(tuple)),
    Rwalk: st.builds(Rwalk, u16, st.lists(qids, max_size=MAXWELEM).map(tuple)),
    Topen: st.builds(Topen, u16, u32, u8),
    Ropen: st.builds(Ropen, u16, qids, u32),
    Tcreate: st.builds(Tcreate, u16, u32, text, u32, u8),
    Rcreate: st.builds(Rcreate, u16, qids, u32),
    Tread: st.builds(Tread, u16, u32, u64, u32),
    Rread: st.builds(Rread, u16, data),
    Twrite: st.builds(Twrite, u16, u32, u64, data),
    Rwrite: st.builds(Rwrite, u16, u32),
    Tclunk: st.builds(Tclunk, u16, u32),
    Rclunk: st.builds(Rclunk, u16),
    Tremove: st.builds(Tremove, u16, u32),
    Rremove: st.builds(Rremove, u16),
    Tstat: st.builds(Tstat, u16, u32),
    Rstat: st.builds(Rstat, u16, stats),
    Twstat: st.builds(Twstat, u16, u32, stats),
    Rwstat: st.builds(Rwstat, u16),
}
messages = st.one_of(*STRATEGIES.values())
BIG_MSIZE = 1 << 20  # random messages may exceed the default 8192


def test_every_message_type_has_a_strategy():
    assert set(STRATEGIES) == set(get_args(Message))
    assert len(STRATEGIES) == 27


def chunked(stream, cuts):
    points = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in zip(points, points[1:])]


def decode_all(decoder, chunks):
    out = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (msg := decoder.next_message()) is not None:
            out.append(msg)
    return out


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda cls: cls.__name__)
@settings(max_examples=25, deadline=None)
@given(draw=st.data())
def test_round_trip_each_type(cls, draw):
    msg = draw.draw(STRATEGIES[cls])
    frame = encode(msg)
    cuts = draw.draw(st.lists(st.integers(0, len(frame)), max_size=6))
    decoder = Decoder(BIG_MSIZE)
    assert decode_all(decoder, chunked(frame, cuts)) == [msg]
    assert decoder.buffered == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6), st.data())
def test_round_trip_stream_in_random_chunks(msgs, draw):
    stream = b"".join(encode(m) for m in msgs)
    cuts = draw.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    assert decode_all(Decoder(BIG_MSIZE), chunked(stream, cuts)) == msgs


@settings(max_examples=100, deadline=None)
@given(stats)
def test_stat_round_trip(stat):
    assert Stat.decode(stat.encode()) == stat
    assert encode_stat(stat) == stat.encode()


@settings(max_examples=50, deadline=None)
@given(st.lists(stats, max_size=5))
def test_directory_data_round_trip(entries):
    assert decode_stats(b"".join(encode_stat(s) for s in entries)) == entries


def test_messages_are_hashable_values():
    assert Tclunk(1, 2) == Tclunk(1, 2)
    assert Rflush(1) != Rclunk(1)
    assert len({Twalk(1, 0, 1, ("a",)), Twalk(1, 0, 1, ("a",))}) == 1
    with pytest.raises(AttributeError):
        Tclunk(1, 2).fid = 3  # type: ignore[misc]


# --- pinned byte layout (hand-computed from intro(5)) ---------------------

ROOT_STAT = Stat(
    type=0, dev=0, qid=Qid(QTDIR, 0, 0), mode=DMDIR | 0o555, atime=1, mtime=2,
    length=0, name=".", uid="u", gid="g", muid="",
)


@pytest.mark.parametrize("msg, hexbytes", [
    (Tversion(NOTAG, 8192, "9P2000"),
     "13000000 64 ffff 00200000 0600 395032303030"),
    (Tattach(0, 0, NOFID, "me", ""),
     "15000000 68 0000 00000000 ffffffff 0200 6d65 0000"),
    (Twalk(1, 0, 1, ("new",)),
     "16000000 6e 0100 00000000 01000000 0100 0300 6e6577"),
    (Rwalk(1, (Qid(0, 1, 2),)),
     "16000000 6f 0100 0100 00 01000000 0200000000000000"),
    (Topen(2, 1, OWRITE | ORCLOSE),
     "0c000000 70 0200 01000000 41"),
    (Tread(3, 1, 0x0102030405060708, 8192),
     "17000000 74 0300 01000000 0807060504030201 00200000"),
    (Rread(3, b"ab"),
     "0d000000 75 0300 02000000 6162"),
    (Rerror(4, "no"),
     "0b000000 6b 0400 0200 6e6f"),
    (Tflush(5, 3),
     "09000000 6c 0500 0300"),
    (Rclunk(6),
     "07000000 79 0600"),
    (Rstat(4, ROOT_STAT),
     "3d000000 7d 0400 3400"  # frame header, then the extra n[2] = 52
     " 3200 0000 00000000 80 00000000 0000000000000000"  # size type dev qid
     " 6d010080 01000000 02000000 0000000000000000"  # mode atime mtime length
     " 0100 2e 0100 75 0100 67 0000"),  # name uid gid muid
], ids=lambda v: type(v).__name__ if not isinstance(v, str) else "")
def test_pinned_bytes(msg, hexbytes):
    frame = bytes.fromhex(hexbytes)
    assert encode(msg) == frame
    decoder = Decoder()
    decoder.feed(frame)
    assert decoder.next_message() == msg


def test_constants():
    assert (NOTAG, NOFID) == (0xFFFF, 0xFFFFFFFF)
    assert (OREAD, OWRITE, ORDWR, OEXEC, OTRUNC, ORCLOSE) == (0, 1, 2, 3, 0x10, 0x40)
    assert (QTDIR, QTFILE, DMDIR) == (0x80, 0, 0x80000000)
    assert (VERSION, MAXWELEM, IOHDRSZ) == ("9P2000", 16, 24)


def test_iohdrsz_leaves_room_for_io_headers():
    msize = 8192
    body = b"x" * (msize - IOHDRSZ)
    assert len(encode(Twrite(0, 0, 0, body), msize)) <= msize
    assert len(encode(Rread(0, body), msize)) <= msize


# --- the decoder refuses malformed input ----------------------------------

def frame(type_code, body, tag=0):
    return (7 + len(body)).to_bytes(4, "little") + bytes([type_code]) + tag.to_bytes(2, "little") + body


def expect_error(stream, msize=8192):
    decoder = Decoder(msize)
    with pytest.raises(NinepError) as info:
        decode_all(decoder, [stream])
    assert isinstance(info.value, ProtocolError)
    return decoder


def test_oversize_frame_refused_as_soon_as_size_arrives():
    decoder = Decoder(msize=100)
    decoder.feed((101).to_bytes(4, "little"))
    with pytest.raises(NinepError):
        decoder.next_message()


def test_frame_of_exactly_msize_accepted():
    msg = Rread(0, b"x" * 89)
    decoder = Decoder(msize=100)
    decoder.feed(encode(msg))
    assert decoder.next_message() == msg


@pytest.mark.parametrize("stream", [
    pytest.param(b"\x06\x00\x00\x00", id="size-below-header"),
    pytest.param(b"\x00\x00\x00\x00", id="size-zero"),
    pytest.param(frame(106, b""), id="no-Terror"),
    pytest.param(frame(0, b""), id="type-0"),
    pytest.param(frame(200, b""), id="type-200"),
    pytest.param(frame(100, b"\x00\x20\x00\x00\x06\x009P20"), id="string-past-frame"),
    pytest.param(frame(100, b"\x00\x20\x00"), id="int-past-frame"),
    pytest.param(frame(120, b"\x01\x00\x00\x00\x00"), id="trailing-byte"),
    pytest.param(frame(121, b"\x00"), id="trailing-on-empty"),
    pytest.param(frame(117, b"\x05\x00\x00\x00abc"), id="data-past-frame"),
    pytest.param(frame(107, b"\x02\x00\xff\xfe"), id="bad-utf8"),
    pytest.param(frame(107, b"\x02\x00\xed\xa0"), id="truncated-utf8"),
    pytest.param(frame(110, b"\0" * 8 + b"\x11\x00" + b"\x00\x00" * 17), id="nwname-17"),
    pytest.param(frame(111, b"\x11\x00" + b"\0" * 13 * 17), id="nwqid-17"),
    pytest.param(frame(125, b"\x04\x00" + b"\x03\x00\0\0\0\0"), id="stat-size-mismatch"),
    pytest.param(frame(125, b"\x03\x00\x01\x00\0"), id="stat-truncated"),
    pytest.param(frame(125, b"\x36\x00" + encode_stat(ROOT_STAT) + b"\0\0"), id="stat-trailing"),
    pytest.param(frame(125, b"\x34\x00" + encode_stat(ROOT_STAT)[:-2] + b"\x01\x00"),
                 id="stat-string-past-entry"),
])
def test_malformed_frame(stream):
    expect_error(stream)


def test_a_walk_of_17_elements_is_named_in_the_error():
    """walk(5): at most 16 elements; the error says how many the peer sent."""
    with pytest.raises(NinepError) as info:
        decode_all(Decoder(), [frame(111, b"\x11\x00" + b"\0" * 13 * 17)])
    assert info.value.data == 17
    assert str(info.value) == "walk of more than MAXWELEM=16 elements: 17"


def test_invalid_utf8_is_named_with_its_first_64_bytes():
    raw = b"\xff" * 100
    with pytest.raises(NinepError) as info:
        decode_all(Decoder(), [frame(107, len(raw).to_bytes(2, "little") + raw)])
    assert info.value.data == b"\xff" * 64
    assert str(info.value) == f"invalid UTF-8 in string: {raw[:64]!r}"


TRUNCATED = frame(107, (200).to_bytes(2, "little") + b"e" * 70)  # a 200-byte string, 70 sent


@pytest.mark.parametrize("stream, msize, says, data", [
    pytest.param(b"\x06\x00\x00\x00", 8192, "frame size below the 7-byte header", 6,
                 id="size-6"),
    pytest.param((101).to_bytes(4, "little"), 100, "frame size over msize 100", 101,
                 id="size-over-msize"),
    pytest.param(b"\x01\x20\x00\x00", None, "frame size over msize 8192", 8193,
                 id="size-over-default-msize"),
    pytest.param(frame(106, b""), 8192, "unknown message type", 106, id="Terror"),
    pytest.param(TRUNCATED, 8192, "data truncated", TRUNCATED[:64], id="truncated"),
    pytest.param(frame(121, b"\0" * 70), 8192, "trailing bytes in message", b"\0" * 64,
                 id="trailing"),
])
def test_decoder_errors_say_what_and_show_the_bytes(stream, msize, says, data):
    """The error names the fault and carries (at most 64 bytes of) what came."""
    decoder = Decoder() if msize is None else Decoder(msize)
    decoder.feed(stream)
    with pytest.raises(NinepError) as info:
        decoder.next_message()
    assert info.value.data == data
    assert str(info.value) == f"{says}: {data!r}"


def test_decoder_stays_broken():
    decoder = expect_error(frame(106, b""))
    with pytest.raises(NinepError):
        decoder.next_message()
    with pytest.raises(NinepError):
        decoder.feed(encode(Rclunk(0)))


def test_good_frames_before_a_bad_one_are_returned():
    decoder = Decoder()
    decoder.feed(encode(Rclunk(1)) + frame(106, b""))
    assert decoder.next_message() == Rclunk(1)
    with pytest.raises(NinepError):
        decoder.next_message()


def test_partial_frame_waits_and_counts_buffered_bytes():
    whole = encode(Rerror(7, "permission denied"))
    decoder = Decoder()
    decoder.feed(whole[:10])
    assert decoder.next_message() is None
    assert decoder.buffered == 10
    decoder.feed(whole[10:])
    assert decoder.next_message() == Rerror(7, "permission denied")
    assert decoder.buffered == 0


def test_msize_is_settable_after_negotiation():
    big = encode(Rread(0, b"x" * 10000))
    decoder = Decoder()
    decoder.msize = 65560
    decoder.feed(big)
    assert decoder.next_message() == Rread(0, b"x" * 10000)
    expect_error(big)  # the default msize 8192 refuses it
    with pytest.raises(ValueError):
        decoder.msize = 6


def test_decode_stats_refuses_cut_entry():
    with pytest.raises(NinepError):
        decode_stats(encode_stat(ROOT_STAT)[:-1])
    with pytest.raises(NinepError):
        decode_stats(b"\x00")
    with pytest.raises(NinepError):
        Stat.decode(encode_stat(ROOT_STAT) + b"\0")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_arbitrary_bytes_raise_only_ninep_error(junk, draw):
    cuts = draw.draw(st.lists(st.integers(0, len(junk)), max_size=5))
    try:
        decode_all(Decoder(), chunked(junk, cuts))
    except NinepError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(100, 127), u8), st.binary(max_size=120))
def test_random_bodies_raise_only_ninep_error(type_code, body):
    try:
        decode_all(Decoder(), [frame(type_code, body)])
    except NinepError:
        pass


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_mutated_frames_raise_only_ninep_error(msg, draw):
    raw = bytearray(encode(msg))
    for _ in range(draw.draw(st.integers(1, 4))):
        pos = draw.draw(st.integers(4, len(raw) - 1))
        raw[pos] = draw.draw(u8)
    cut = draw.draw(st.integers(7, len(raw)))
    mutated = len(raw[:cut]).to_bytes(4, "little") + bytes(raw[4:cut])
    try:
        decode_all(Decoder(BIG_MSIZE), [mutated])
    except NinepError:
        pass


# --- encode refuses values that cannot be sent ----------------------------

@pytest.mark.parametrize("msg", [
    pytest.param(Rerror(0, "x" * 65536), id="string-too-long"),
    pytest.param(Rerror(0, "é" * 32768), id="string-too-long-in-utf8"),
    pytest.param(Rerror(0, "\ud800"), id="surrogate"),
    pytest.param(Twalk(0, 0, 1, ("a",) * (MAXWELEM + 1)), id="17-wnames"),
    pytest.param(Rwalk(0, (Qid(0, 0, 0),) * (MAXWELEM + 1)), id="17-qids"),
    pytest.param(Tclunk(0x10000, 0), id="tag-too-big"),
    pytest.param(Tclunk(0, -1), id="negative-fid"),
    pytest.param(Topen(0, 0, 0x100), id="mode-too-big"),
    pytest.param(Rattach(0, Qid(0x100, 0, 0)), id="qid-type-too-big"),
])
def test_encode_refuses_out_of_range(msg):
    with pytest.raises(ValueError):
        encode(msg)


@pytest.mark.parametrize("msg, says", [
    pytest.param(Twalk(0, 0, 1, ["a"]), "wnames must be a tuple, not list",  # type: ignore[arg-type]
                 id="wnames-list"),
    pytest.param(Twalk(0, 0, 1, ("a", 5)), "wnames[1] must be a str, not int",  # type: ignore[arg-type]
                 id="wname-int"),
    pytest.param(Rwalk(0, (Qid(0, 0, 0), "q")), "qids[1] must be a Qid, not str",  # type: ignore[arg-type]
                 id="qid-str"),
    pytest.param(Rerror(0, b"bytes"), "ename must be a str, not bytes",  # type: ignore[arg-type]
                 id="bytes-for-str"),
    pytest.param(Twrite(0, 0, 0, "text"), "data must be bytes, not str",  # type: ignore[arg-type]
                 id="str-for-bytes"),
    pytest.param(Tclunk(0, "1"), "fid must be an int, not str",  # type: ignore[arg-type]
                 id="str-for-int"),
    pytest.param(Rstat(0, None), "stat must be a Stat, not NoneType",  # type: ignore[arg-type]
                 id="no-stat"),
    pytest.param(Rattach(0, "q"), "qid must be a Qid, not str",  # type: ignore[arg-type]
                 id="str-for-qid"),
])
def test_encode_refuses_wrong_kinds(msg, says):
    with pytest.raises(TypeError) as error:
        encode(msg)
    assert str(error.value) == says  # the field and the wrong type, before any I/O


@pytest.mark.parametrize("msg, says", [
    pytest.param(Rattach(0, Qid(0x100, 0, 0)), "qid.type=256 does not fit in 1 bytes",
                 id="qid-type"),
    pytest.param(Rattach(0, Qid(0, 1 << 32, 0)), "qid.vers=4294967296 does not fit in 4 bytes",
                 id="qid-vers"),
    pytest.param(Rattach(0, Qid(0, 0, 1 << 64)),
                 "qid.path=18446744073709551616 does not fit in 8 bytes", id="qid-path"),
    pytest.param(Rerror(0, "é" * 32768), "ename is 65536 UTF-8 bytes, over 65535",
                 id="string-utf8"),
    pytest.param(Tclunk(0x10000, 0), "tag=65536 does not fit in 2 bytes", id="tag"),
])
def test_out_of_range_errors_name_the_field(msg, says):
    with pytest.raises(ValueError) as error:
        encode(msg, msize=1 << 20)
    assert str(error.value) == says


def test_a_string_of_65535_utf8_bytes_fits():
    """intro(5): a string is len[2] then its UTF-8 bytes, so up to 65535 of them."""
    msg = Rerror(0, "x" * 65535)
    decoder = Decoder(1 << 20)
    decoder.feed(encode(msg, msize=1 << 20))
    assert decoder.next_message() == msg


def test_a_directory_entry_holds_up_to_65535_bytes_after_its_size():
    """stat(5): size[2] counts the bytes that follow it, so an entry is at most 2 + 65535."""
    import dataclasses
    base = len(encode_stat(ROOT_STAT)) - 2 - len(ROOT_STAT.name)
    fits = dataclasses.replace(ROOT_STAT, name="x" * (65535 - base))
    entry = encode_stat(fits)
    assert len(entry) == 2 + 65535 and entry[:2] == b"\xff\xff"
    assert decode_stats(entry) == [fits]
    with pytest.raises(ValueError) as error:
        encode_stat(dataclasses.replace(fits, name=fits.name + "x"))
    assert str(error.value) == "stat is 65536 bytes, over 65535"


def test_encode_refuses_more_walk_names_than_9p_allows():
    encode(Twalk(0, 0, 1, ("a",) * 16))
    with pytest.raises(ValueError) as error:
        encode(Twalk(0, 0, 1, ("a",) * 17))
    assert str(error.value) == "wnames has 17 elements, over MAXWELEM=16"


def test_encode_refuses_non_message():
    with pytest.raises(TypeError) as error:
        encode(ROOT_STAT)  # type: ignore[arg-type]
    assert str(error.value) == "not a 9P message: Stat"


def test_encode_checks_msize():
    msg = Rread(0, b"x" * 100)
    assert len(encode(msg, msize=111)) == 111
    with pytest.raises(ValueError) as error:
        encode(msg, msize=110)
    assert str(error.value) == "Rread is 111 bytes, over 110"


def test_a_stat_over_65535_bytes_is_refused():
    import dataclasses
    base = len(encode(Rstat(0, ROOT_STAT)))
    fits = dataclasses.replace(ROOT_STAT, name="x" * (65535 - (base - 9) + 1))
    encode(Rstat(0, fits), msize=1 << 20)  # exactly 65535 bytes of stat
    over = dataclasses.replace(fits, name=fits.name + "x")
    with pytest.raises(ValueError, match="^stat is 65536 bytes, over 65535$"):
        encode(Rstat(0, over), msize=1 << 20)
    with pytest.raises(TypeError, match="^stat must be a Stat, not str$"):
        encode(Rstat(0, "x"))  # type: ignore[arg-type]
