"""The Styx frontend over real sockets, message by message (registry4.md §1, §3-5, §7)."""
import random
import socket

import gevent
import pytest

from regmgr import ninep
from regmgr.ninep import NOFID, NOTAG, ORCLOSE, ORDWR, OREAD, OTRUNC, OWRITE, QTDIR
from regmgr.testing import RegistryServer
from regmgr.wire import parse_services

from serverutil import eventually, find, register as tcp_register
from styxutil import Raw

T = ninep
# Qid paths of ndb/registry (registry.b: Qroot, Qnew, ... Qsvc: con iota); a
# service is (id << 4) | 5 (registry4.md §9). Literals, not the server's constants.
QROOT, QNEW, QINDEX, QEVENT, QFIND, QSVC = range(6)


@pytest.fixture
def raw(registry_server):
    """A versioned session attached as alice on fid 0."""
    conn = Raw(registry_server.styx_port).session("alice")
    yield conn
    conn.close()


def styx(server, uname="alice"):
    return Raw(server.styx_port).session(uname)


# -- version, auth, attach ----------------------------------------------------

@pytest.mark.parametrize("asked, msize, version", [
    ((8192, "9P2000"), 8192, "9P2000"),
    ((1 << 20, "9P2000"), 65560, "9P2000"),
    ((8216, "9P2000.L"), 8216, "9P2000"),
    ((8192, "9P1"), 8192, "unknown"),
    ((8192, "Styx"), 8192, "unknown"),
])
def test_version(registry_server, asked, msize, version):
    conn = Raw(registry_server.styx_port)
    reply = conn.version(*asked)
    assert (type(reply), reply.tag, reply.msize, reply.version) == (T.Rversion, NOTAG, msize, version)


def test_version_too_small(registry_server):
    assert Raw(registry_server.styx_port).version(100).ename == "message size too small"


def test_requests_before_version_or_after_unknown(registry_server):
    conn = Raw(registry_server.styx_port)
    assert conn.error(T.Tattach(1, 0, NOFID, "u", "")) == "Tversion not seen"
    assert conn.version(8192, "9P3000").version == "unknown"
    assert conn.error(T.Tattach(1, 0, NOFID, "u", "")) == "Tversion not seen"


def test_auth_not_required(registry_server):
    conn = Raw(registry_server.styx_port)
    conn.version()
    assert conn.error(T.Tauth(1, 5, "alice", "")) == "authentication not required"


def test_attach(registry_server):
    conn = Raw(registry_server.styx_port)
    conn.version()
    qid = conn.attach(0, "alice").qid
    assert (qid.type, qid.path) == (QTDIR, QROOT)
    assert conn.error(T.Tattach(2, 0, NOFID, "bob", "")) == "fid already in use"
    conn.attach(1, "bob")  # several attaches, several users, one connection


def test_version_again_clunks_every_fid(registry_server, raw):
    raw.register(1, b"s\n")
    assert "s" in registry_server.index()
    assert raw.version().version == "9P2000"
    assert "s" not in registry_server.index()
    assert raw.error(T.Tstat(1, 0)) == "bad fid"


# -- bad fids and refused operations ------------------------------------------

@pytest.mark.parametrize("msg", [
    T.Twalk(1, 9, 10, ()), T.Topen(1, 9, OREAD), T.Tread(1, 9, 0, 10),
    T.Twrite(1, 9, 0, b"x"), T.Tclunk(1, 9), T.Tremove(1, 9), T.Tstat(1, 9),
])
def test_bad_fid(raw, msg):
    assert raw.error(msg) == "bad fid"


def test_create_and_wstat_are_refused(raw):
    assert raw.error(T.Tcreate(1, 0, "x", 0o666, OWRITE)) == "permission denied"
    st = raw.ok(T.Tstat(2, 0), T.Rstat).stat
    assert raw.error(T.Twstat(3, 0, st)) == "permission denied"


# -- walk -----------------------------------------------------------------------

def test_walk_to_every_file(registry_server, raw):
    raw.register(1, b"svc\n")
    for name, path in (("new", QNEW), ("index", QINDEX), ("find", QFIND), ("event", QEVENT)):
        qid, = raw.ok(T.Twalk(2, 0, 2, (name,)), T.Rwalk).qids
        assert (qid.type, qid.path) == (0, path)
        raw.clunk(2)
    qid, = raw.walk(2, "svc").qids
    assert qid.path & 0xF == QSVC


def test_walk_to_missing_names(raw):
    assert raw.error(T.Twalk(1, 0, 1, ("nosuch",))) == "file does not exist"
    assert raw.error(T.Tclunk(2, 1)) == "bad fid"  # newfid was not created


def test_partial_walk_leaves_newfid_alone(raw):
    reply = raw.ok(T.Twalk(1, 0, 1, ("index", "x")), T.Rwalk)
    assert [q.path for q in reply.qids] == [QINDEX]
    assert raw.error(T.Tclunk(2, 1)) == "bad fid"


def test_walk_from_a_file(raw):
    raw.walk(1, "index")
    assert raw.error(T.Twalk(2, 1, 2, ("new",))) == "not a directory"
    assert raw.error(T.Twalk(2, 1, 2, ("..",))) == "not a directory"


def test_walk_dotdot_and_clone(raw):
    assert [q.path for q in raw.walk(1, "..", "..", "index").qids] == [QROOT, QROOT, QINDEX]
    raw.ok(T.Twalk(2, 0, 2, ()), T.Rwalk)  # clone
    raw.ok(T.Twalk(3, 2, 2, ("find",)), T.Rwalk)  # walk in place
    assert raw.ok(T.Tstat(4, 2), T.Rstat).stat.name == "find"


def test_walk_refusals(raw):
    raw.walk(1, "index")
    assert raw.error(T.Twalk(2, 0, 1, ("find",))) == "fid already in use"
    raw.ok(T.Topen(3, 1, OREAD), T.Ropen)
    assert raw.error(T.Twalk(4, 1, 2, ())) == "fid already opened"


# -- open -----------------------------------------------------------------------

@pytest.mark.parametrize("name, mode, error", [
    ("index", OWRITE, "permission denied"),
    ("index", ORDWR, "permission denied"),
    ("index", OREAD | OTRUNC, "permission denied"),
    ("event", OWRITE, "permission denied"),
    ("new", 3, "bad argument"),
    ("new", OWRITE | 0x20, "bad argument"),
])
def test_open_refusals(raw, name, mode, error):
    assert raw.open(1, name, mode).ename == error


def test_open_root(raw):
    raw.ok(T.Twalk(1, 0, 1, ()), T.Rwalk)
    assert raw.error(T.Topen(2, 1, OWRITE)) == "permission denied"
    assert raw.error(T.Topen(3, 1, OREAD | ORCLOSE)) == "permission denied"
    assert raw.ok(T.Topen(4, 1, OREAD), T.Ropen).qid.type == QTDIR
    assert raw.error(T.Topen(5, 1, OREAD)) == "fid already opened"


def test_iounit(registry_server):
    for msize, iounit in ((65560, 8192), (8192, 8168), (1000, 976)):
        conn = Raw(registry_server.styx_port).session(msize=msize)
        assert conn.open(1, "index", OREAD).iounit == iounit


# -- read and write ---------------------------------------------------------------

def test_read_and_write_need_an_open_fid_in_the_right_mode(raw):
    raw.walk(1, "index")
    assert raw.error(T.Tread(1, 1, 0, 10)) == "read/write -- on non open fid"
    assert raw.error(T.Twrite(1, 1, 0, b"x")) == "read/write -- on non open fid"
    raw.ok(T.Topen(2, 1, OREAD), T.Ropen)
    assert raw.error(T.Twrite(3, 1, 0, b"s\n")) == "read/write -- not open in suitable mode"
    assert raw.error(T.Tread(4, 1, 0, 8192 - 23)) == "read/write -- count negative or exceeds msgsize"
    assert raw.error(T.Tread(5, 1, 1 << 63, 10)) == "read/write -- bad offset"
    raw.open(5, "new", OWRITE)
    assert raw.error(T.Tread(6, 5, 0, 10)) == "read/write -- not open in suitable mode"


def test_register_index_find_and_service_file(registry_server, raw):
    ropen = raw.open(1, "new", ORDWR)
    assert ropen.qid.path & 0xF == QSVC
    assert raw.write(1, b"svc proto http 'a b' 'x y'\n").count == 27
    raw.open(2, "index", OREAD)
    assert raw.read_all(2) == b"svc 'a b' 'x y' proto http\n"
    assert raw.read(1).data == b"svc 'a b' 'x y' proto http\n"  # the service file, via its creating fid
    raw.open(3, "svc", OREAD)
    assert raw.read(3, offset=4, count=5).data == b"'a b'"
    st = raw.ok(T.Tstat(4, 3), T.Rstat).stat
    assert (st.name, st.mode, st.uid, st.qid.path) == ("svc", 0o644, "alice", ropen.qid.path)
    assert raw.write(1, b"proto ssh").count == 9  # an update; the offset is ignored
    assert registry_server.index() == {"svc": {"proto": "ssh", "a b": "x y"}}


def test_refused_writes_carry_the_registrys_text(registry_server, raw):
    raw.register(1, b"dup\n")
    for fid, line, error in (
        (2, b"dup a 1\n", "duplicate service name"),
        (3, b"a/b\n", "bad character in service name"),
        (4, b"index\n", "bad service name"),
        (5, b"\n", "bad syntax"),
    ):
        raw.open(fid, "new", OWRITE)
        assert raw.write(fid, line).ename == error
    raw.open(6, "new", OWRITE)
    assert raw.write(6, b"odd a\n").ename == "odd attribute/value pairs"
    assert set(registry_server.index()) == {"dup", "odd"}  # named although the write failed


def test_find_filters_per_fid(registry_server, raw):
    raw.register(1, b"a proto http\n")
    raw.register(2, b"b proto ssh\n")
    raw.open(3, "find", ORDWR)
    raw.open(4, "find", ORDWR)
    raw.write(3, b"proto http")
    assert raw.read_all(3) == b"a proto http\n"
    assert set(parse_services(raw.read_all(4).decode())) == {"a", "b"}
    assert raw.write(3, b"proto").ename == "odd attribute/value pairs"
    raw.write(3, b"")  # ndb/regquery with no arguments: an empty write clears the filter
    assert set(parse_services(raw.read_all(3).decode())) == {"a", "b"}


def test_file_contents_are_taken_at_offset_zero(raw):
    raw.register(1, b"a\n")
    raw.open(2, "index", OREAD)
    assert raw.read(2, count=1).data == b"a"
    raw.register(3, b"b\n")
    assert raw.read(2, offset=1).data == b"\n"  # the listing as it was at offset 0
    assert raw.read(2).data == b"a\nb\n"


def test_write_to_index_is_refused(raw):
    assert raw.open(1, "index", OWRITE).ename == "permission denied"
    raw.open(2, "index", OREAD)
    assert raw.write(2, b"s\n").ename == "read/write -- not open in suitable mode"


def test_directory_read(registry_server, raw):
    for fid in range(1, 41):
        raw.register(fid, b"service-%d a b\n" % fid)
    raw.ok(T.Twalk(50, 0, 50, ()), T.Rwalk)
    raw.ok(T.Topen(51, 50, OREAD), T.Ropen)
    entries, offset = [], 0
    while True:
        data = raw.ok(T.Tread(52, 50, offset, 300), T.Rread).data
        if not data:
            break
        entries += ninep.decode_stats(data)  # whole entries only
        offset += len(data)
    names = [st.name for st in entries]
    assert names[:4] == ["new", "index", "find", "event"]
    assert sorted(names[4:]) == sorted(f"service-{i}" for i in range(1, 41))
    assert {st.uid for st in entries[4:]} == {"alice"}
    assert [st.mode for st in entries[:4]] == [0o666, 0o444, 0o666, 0o444]


def test_stat_of_root_and_of_a_vanished_service(registry_server, raw):
    root = raw.ok(T.Tstat(1, 0), T.Rstat).stat
    assert (root.name, root.mode, root.qid.type) == ("/", ninep.DMDIR | 0o777, QTDIR)
    raw.register(1, b"s\n")
    raw.walk(2, "s")
    raw.clunk(1)
    assert raw.error(T.Tstat(3, 2)) == "file does not exist"
    assert raw.error(T.Topen(4, 2, OREAD)) == "file does not exist"


# -- lifetime: clunk, persist, ORCLOSE, remove ----------------------------------

def test_clunk_of_the_creating_fid_unregisters(registry_server, raw):
    raw.register(1, b"s\n")
    raw.open(2, "s", ORDWR)  # a second fid on the service, by its owner
    raw.write(2, b"x 1")
    raw.clunk(2)  # does not unregister
    assert registry_server.index() == {"s": {"x": "1"}}
    raw.clunk(1)
    assert registry_server.index() == {}


def test_persist(registry_server, raw):
    raw.register(1, b"s persist 1\n")
    raw.clunk(1)
    assert "s" in registry_server.index()


def test_orclose_removes_even_a_persistent_service(registry_server, raw):
    raw.open(1, "new", OWRITE | ORCLOSE)
    raw.write(1, b"s persist 1\n")
    raw.clunk(1)
    assert registry_server.index() == {}


def test_only_the_owner_writes_a_service_file(registry_server, raw):
    raw.register(1, b"s\n")
    bob = styx(registry_server, "bob")
    assert bob.open(1, "s", OWRITE).ename == "permission denied"
    bob.open(2, "s", OREAD)
    assert bob.read(2).data == b"s\n"


def test_remove_by_a_non_owner_is_denied_and_clunks(registry_server, raw):
    raw.register(1, b"s persist 1\n")
    bob = styx(registry_server, "bob")
    bob.walk(1, "s")
    assert bob.error(T.Tremove(2, 1)) == "permission denied"
    assert bob.error(T.Tclunk(3, 1)) == "bad fid"
    assert "s" in registry_server.index()
    raw.walk(2, "s")
    raw.ok(T.Tremove(3, 2), T.Rremove)
    assert registry_server.index() == {}
    raw.ok(T.Tclunk(4, 1), T.Rclunk)  # the creating fid outlives its service


def test_orclose_by_a_non_owner_removes_nothing(registry_server, raw):
    raw.register(1, b"s persist 1\n")
    bob = styx(registry_server, "bob")
    bob.open(1, "s", OREAD | ORCLOSE)
    bob.clunk(1)
    assert "s" in registry_server.index()


@pytest.mark.parametrize("names", [(), ("new",), ("index",), ("find",), ("event",)])
def test_remove_of_root_or_static_files_is_denied(registry_server, raw, names):
    raw.ok(T.Twalk(1, 0, 1, names), T.Rwalk)
    assert raw.error(T.Tremove(2, 1)) == "permission denied"
    assert raw.error(T.Tclunk(3, 1)) == "bad fid"
    raw.register(4, b"still-serving\n")


def test_connection_drop_removes_its_services(registry_server):
    conn = styx(registry_server)
    conn.register(1, b"gone\n")
    conn.register(2, b"kept persist 1\n")
    conn.open(3, "event", OREAD)
    conn.send(T.Tread(9, 3, 0, 100))  # pending at the drop
    conn.ok(T.Tstat(10, 3), T.Rstat)  # answered in order: the read is pending now
    assert set(registry_server.index()) == {"gone", "kept"}
    conn.close()
    eventually(lambda: set(registry_server.index()) == {"kept"})


def test_tcp_and_styx_share_one_registry(registry_server, raw):
    sock = tcp_register(registry_server, b"from-tcp a 1\n")
    raw.register(1, b"from-styx b 2\n")
    eventually(lambda: find(registry_server) == {"from-tcp": {"a": "1"}, "from-styx": {"b": "2"}})
    raw.open(2, "index", OREAD)
    assert set(parse_services(raw.read_all(2).decode())) == {"from-tcp", "from-styx"}
    sock.close()


# -- event ------------------------------------------------------------------------

def test_event_blocks_then_reports_the_latest_version(registry_server, raw):
    raw.open(1, "event", OREAD)
    raw.send(T.Tread(100, 1, 0, 64))
    assert raw.nothing_within(0.1)
    raw.register(2, b"s\n")  # a pending event read does not block the session
    assert raw.reply_to(100).data == b"%08d\n" % registry_server.registry.version


def test_event_coalesces_changes(registry_server, raw):
    raw.open(1, "event", OREAD)
    for fid in (2, 3, 4):
        raw.register(fid, b"s%d\n" % fid)
    raw.clunk(2)
    assert raw.read(1, count=64).data == b"00000004\n"
    raw.send(T.Tread(100, 1, 0, 64))
    assert raw.nothing_within(0.1)


def test_event_read_with_a_short_count(raw):
    raw.open(1, "event", OREAD)
    raw.register(2, b"s\n")
    assert raw.read(1, offset=77, count=4).data == b"0000"


def test_concurrent_read_for_event_fid(raw):
    raw.open(1, "event", OREAD)
    raw.send(T.Tread(100, 1, 0, 64))
    assert raw.error(T.Tread(101, 1, 0, 64)) == "concurrent read for event fid"
    raw.open(2, "event", OREAD)  # another event fid may read at the same time
    raw.send(T.Tread(102, 2, 0, 64))
    raw.register(3, b"s\n")
    assert raw.reply_to(100).data == raw.reply_to(102).data == b"00000001\n"


def test_flush_of_a_pending_event_read(raw):
    raw.open(1, "event", OREAD)
    raw.send(T.Tread(100, 1, 0, 64))
    assert raw.ok(T.Tflush(101, 100), T.Rflush).tag == 101
    raw.register(2, b"s\n")
    assert raw.nothing_within(0.1)  # the flushed read gets no reply
    assert raw.read(1).data == b"00000001\n"  # the fid reads again


def test_flush_of_an_unknown_tag(raw):
    raw.ok(T.Tflush(5, 4242), T.Rflush)


def test_clunk_of_an_event_fid_fails_its_pending_read(raw):
    raw.open(1, "event", OREAD)
    raw.send(T.Tread(100, 1, 0, 64))
    raw.ok(T.Tclunk(101, 1), T.Rclunk)
    assert raw.reply_to(100).ename == "bad fid"


def test_event_readers_on_other_connections(registry_server, raw):
    others = [styx(registry_server, f"u{i}") for i in range(5)]
    for conn in others:
        conn.open(1, "event", OREAD)
        conn.send(T.Tread(100, 1, 0, 64))
    raw.register(1, b"s\n")
    for conn in others:
        assert conn.reply_to(100).data == b"00000001\n"


# -- robustness ---------------------------------------------------------------------

def closed(conn):
    try:
        conn.reply_to(-1, timeout=5)
    except EOFError:
        return True
    except OSError:
        return True
    return False


@pytest.mark.parametrize("junk", [
    b"\x00\x00\x00\x00", b"\x06\x00\x00\x00\x64\x00", b"\xff\xff\xff\xff" + b"x" * 100,
    b"\x07\x00\x00\x00\xc8\x01\x00", b"\x07\x00\x00\x00\x65\x01\x00",  # unknown type, an R-message
    T.encode(T.Rversion(NOTAG, 8192, "9P2000")), b"GET / HTTP/1.0\r\n\r\n",
])
def test_garbage_closes_that_connection_only(registry_server, raw, junk):
    raw.register(1, b"survivor\n")
    bad = Raw(registry_server.styx_port)
    bad.sock.sendall(junk)
    assert closed(bad)
    raw.open(2, "index", OREAD)
    assert raw.read_all(2) == b"survivor\n"


def test_frames_over_msize_close_the_connection(registry_server):
    conn = styx(registry_server)
    conn.open(1, "new", OWRITE)
    conn.send(T.Twrite(5, 1, 0, b"x" * 9000))
    assert closed(conn)


def test_random_bytes_never_crash_the_server(registry_server):
    rng = random.Random(4)
    keeper = styx(registry_server)
    keeper.register(1, b"survivor\n")
    for _ in range(200):
        conn = Raw(registry_server.styx_port)
        if rng.random() < 0.5:
            conn.version()
        size = rng.randrange(1, 300)
        conn.sock.sendall(bytes(rng.randrange(256) for _ in range(size)))
        conn.close()
    for _ in range(50):  # well-framed messages of random types and bodies
        conn = styx(registry_server)
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        frame = bytes([rng.randrange(100, 128), 1, 0]) + body
        conn.sock.sendall((len(frame) + 4).to_bytes(4, "little") + frame)
        gevent.sleep(0)
        conn.close()
    assert set(registry_server.index()) == {"survivor"}
    keeper.open(2, "index", OREAD)
    assert keeper.read_all(2) == b"survivor\n"


def test_many_requests_pipelined(registry_server, raw):
    frames = b"".join(T.encode(T.Twalk(i, 0, 100 + i, ("index",))) for i in range(1, 500))
    raw.sock.sendall(frames)
    for i in range(1, 500):
        assert isinstance(raw.reply_to(i), T.Rwalk)


def test_stop_closes_styx_connections():
    server = RegistryServer()
    server.start()
    conn = styx(server)
    conn.register(1, b"s\n")
    server.stop()
    assert closed(conn)


def test_registry_process_serves_styx_on_the_same_port_after_restart():
    from regmgr.testing import RegistryProcess
    with RegistryProcess() as process:
        port = process.styx_port
        styx(process).register(1, b"s persist 1\n")
        process.restart()
        assert process.styx_port == port
        conn = styx(process)
        conn.open(1, "index", OREAD)
        assert conn.read_all(1) == b""  # a restart empties the registry


def test_a_client_that_does_not_read_its_replies_is_not_read_either(registry_server):
    # A session's replies wait in a bounded outbox: past it the server stops
    # taking that client's requests instead of buffering without limit.
    registry = registry_server.registry
    for i in range(20):  # an 80 KiB index
        registry.write(registry.create("me"), f"s{i} pad {'x' * 4000}")
    index = registry.index().encode()
    conn = Raw(registry_server.styx_port).session("alice", msize=65560)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    conn.open(1, "index", OREAD)
    reads = [T.Tread(100, 1, 0, 65536)] + [T.Tread(100 + i, 1, 1, 65536) for i in range(1, 500)]
    marker = [T.Twalk(900, 0, 2, ("new",)), T.Topen(901, 2, OWRITE), T.Twrite(902, 2, 0, b"late\n")]
    conn.sock.sendall(b"".join(T.encode(m) for m in reads + marker))  # 32 MiB of replies
    with pytest.raises(AssertionError):  # stuck behind the replies nobody reads
        eventually(lambda: registry.get("late") is not None, timeout=2)
    for msg in reads:
        assert conn.reply_to(msg.tag, timeout=10).data == index[msg.offset:msg.offset + 65536]
    assert isinstance(conn.reply_to(902), T.Rwrite)
    assert "late" in registry_server.index()
