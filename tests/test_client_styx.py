"""What only the Styx transport does: one session, flushes, tags and fids, remove/index."""
import gevent
import pytest
from gevent.server import StreamServer

from regmgr import ninep
from regmgr.connections.styx import Styx
from regmgr.errors import ProtocolError, RegistryError
from serverutil import eventually, spawn_blocked


def styx(server, **kwargs):
    return Styx(server.host, server.styx_port, **kwargs)


def sessions(server):
    """Styx connections the in-process registry has open."""
    return len(server._styx._clients)


@pytest.fixture
def scripted():
    """``serve(answer)``: a Styx peer that answers each T-message with ``answer(msg)``.

    ``answer`` returns an R-message, or None to stay silent. Every message
    received is appended to the returned list.
    """
    servers = []

    def serve(answer):
        received = []

        def handle(sock, address):
            decoder = ninep.Decoder(65560)
            while True:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:  # a client gives up a silent peer with a reset
                    return
                if not data:
                    return
                decoder.feed(data)
                while (msg := decoder.next_message()) is not None:
                    received.append(msg)
                    reply = answer(msg)
                    if reply is not None:
                        sock.sendall(ninep.encode(reply))

        server = StreamServer(("127.0.0.1", 0), handle)
        server.start()
        servers.append(server)
        return server.server_port, received

    yield serve
    for server in servers:
        server.stop(timeout=0)


def polite(msg):
    """A registry that accepts the handshake, walks and opens, and ignores writes."""
    qid = ninep.Qid(0, 0, 1)
    replies = {
        ninep.Tversion: lambda m: ninep.Rversion(m.tag, m.msize, "9P2000"),
        ninep.Tattach: lambda m: ninep.Rattach(m.tag, ninep.Qid(ninep.QTDIR, 0, 0)),
        ninep.Twalk: lambda m: ninep.Rwalk(m.tag, (qid,) * len(m.wnames)),
        ninep.Topen: lambda m: ninep.Ropen(m.tag, qid, 0),
        ninep.Tflush: lambda m: ninep.Rflush(m.tag),
        ninep.Tclunk: lambda m: ninep.Rclunk(m.tag),
    }
    return replies[type(msg)](msg) if type(msg) in replies else None


def test_defaults_and_arguments():
    conn = Styx("h")
    assert (conn.port, conn.user, conn.msize, conn.connect_timeout) == (6675, "none", 65560, 5.0)
    with pytest.raises(TypeError):
        Styx(None)


def test_one_socket_carries_everything(registry_server):
    conn = styx(registry_server)
    stream = conn.open_event()
    regs = [conn.open_new(f"svc{i}", {"n": str(i)}) for i in range(50)]
    assert len(conn.find({"n": "*"})) == 50 and len(conn.index()) == 50
    assert sessions(registry_server) == 1
    for reg in regs:
        reg.close()
    stream.close()
    eventually(lambda: sessions(registry_server) == 0)  # the last holder ends the session
    assert registry_server.index() == {}


def test_a_find_alone_opens_and_closes_a_session(registry_server):
    assert styx(registry_server).find() == {}
    eventually(lambda: sessions(registry_server) == 0)


@pytest.mark.parametrize("name, error", [
    ("a b", "bad character in service name"), ("a/b", "bad character in service name"),
    ("new", "bad service name"), ("", "bad service name"), ("dup", "duplicate service name"),
])
def test_open_new_raises_the_registrys_text(registry_server, name, error):
    conn = styx(registry_server)
    first = conn.open_new("dup")
    with pytest.raises(RegistryError) as caught:
        conn.open_new(name, {"a": "1"})
    assert caught.value.text == error
    first.close()
    eventually(lambda: registry_server.index() == {})


def test_remove_a_persistent_service(registry_server):
    conn = styx(registry_server, user="alice")
    conn.open_new("kept", {"persist": "1"}).close()
    assert conn.index() == {"kept": {"persist": "1"}}
    with pytest.raises(RegistryError, match="permission denied"):
        styx(registry_server, user="bob").remove("kept")
    conn.remove("kept")
    assert conn.index() == {}
    with pytest.raises(RegistryError, match="file does not exist"):
        conn.remove("kept")


def test_removal_by_the_owner_ends_the_registration(registry_server, hub_errors):
    hub_errors.expect(RegistryError, match="buggy program!")  # the waiter's end
    conn = styx(registry_server)
    reg = conn.open_new("svc")
    waiter = gevent.spawn(reg.wait)
    conn.remove("svc")
    reg.update({"a": "1"})  # sent without waiting: its refusal ends the registration
    with pytest.raises(RegistryError, match="buggy program!"):
        waiter.get(timeout=5)
    with pytest.raises(ConnectionError):
        reg.update({"a": "2"})
    reg.close()


def test_a_cancelled_event_wait_is_flushed(registry_server):
    conn = styx(registry_server)
    keep = conn.open_new("keep")
    stream = conn.open_event()
    waiter = spawn_blocked(stream.wait)
    waiter.kill()
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.05):
        stream.wait()
    keep.update({"a": "1"})
    assert stream.wait() == registry_server.registry.version  # no "concurrent read": flushed
    stream.close()
    keep.close()


def test_close_wakes_a_blocked_event_wait(registry_server, hub_errors):
    hub_errors.expect(ConnectionError, match="event stream closed")  # the waiter's end
    stream = styx(registry_server).open_event()
    waiter = spawn_blocked(stream.wait)
    stream.close()
    with pytest.raises(ConnectionError):
        waiter.get(timeout=5)
    eventually(lambda: sessions(registry_server) == 0)


def test_tags_and_fids_are_recycled(registry_server):
    conn = styx(registry_server)
    keep = conn.open_new("keep")  # holds the session open across the calls
    for i in range(300):
        conn.open_new(f"s{i}").close()
        conn.find({"x": "y"})
    session = conn._session
    eventually(lambda: len(session._calls) == 0)
    assert session._next_fid < 10 and session._next_tag < 10
    keep.close()


def test_socket_drop_fails_every_pending_call_at_once(registry_server, hub_errors):
    hub_errors.expect(ConnectionError)  # how each waiter ends
    conn = styx(registry_server)
    regs = [conn.open_new(f"svc{i}") for i in range(20)]
    stream = conn.open_event()
    waiters = [spawn_blocked(stream.wait)] + [spawn_blocked(reg.wait) for reg in regs]
    registry_server.stop()
    gevent.joinall(waiters, timeout=10)
    assert all(w.ready() and isinstance(w.exception, ConnectionError) for w in waiters)
    with pytest.raises(ConnectionError):
        regs[0].update({"a": "1"})
    registry_server.start()
    assert conn.open_new("svc0") and conn.find() == {"svc0": {}}  # a new session


def test_long_attribute_lists_go_in_several_writes(registry_server):
    conn = styx(registry_server, msize=256)
    attrs = {f"attr{i}": "v" * 20 for i in range(30)}
    reg = conn.open_new("svc", attrs)
    assert conn.find() == {"svc": attrs}
    reg.update({f"more{i}": "w" * 20 for i in range(30)})
    assert len(conn.find()["svc"]) == 60
    with pytest.raises(ValueError, match="write limit"):
        reg.update({"big": "x" * 300})
    with pytest.raises(ValueError, match="write limit"):
        conn.find({"big": "x" * 300})
    reg.close()


def test_msize_is_negotiated_and_writes_stay_within_iounit(registry_server):
    conn = styx(registry_server, msize=1 << 20)
    reg = conn.open_new("svc", {"v": "x" * 4000, "w": "y" * 4000})  # one write over 8000 bytes
    assert conn._session.msize == 65560
    assert reg._limit == 8192  # the iounit, not msize - 24
    assert conn.find() == {"svc": {"v": "x" * 4000, "w": "y" * 4000}}
    with pytest.raises(ValueError, match="byte.* limit"):
        reg.update({"v": "x" * 9000})  # export would split it: Ropen's iounit is the limit
    reg.close()


def test_nothing_listening_is_a_connection_error(registry_server):
    conn = styx(registry_server)
    registry_server.stop()
    with pytest.raises(ConnectionError, match="styx 127.0.0.1"):
        conn.find()


@pytest.mark.parametrize("answer, error, match", [
    (lambda m: ninep.Rversion(m.tag, m.msize, "unknown"), ProtocolError, "cannot agree on 9P2000"),
    (lambda m: ninep.Rversion(m.tag, m.msize * 2, "9P2000"), ProtocolError, "cannot agree"),
    (lambda m: ninep.Rerror(m.tag, "no"), RegistryError, "^no$"),  # the peer's own words
    (lambda m: ninep.Tversion(m.tag, m.msize, "9P2000"), ProtocolError, "unexpected message"),
])
def test_peers_that_do_not_speak_9p2000(scripted, answer, error, match):
    port, _ = scripted(answer)
    with pytest.raises(error, match=match):
        Styx("127.0.0.1", port).find()


def test_a_silent_peer_times_out(scripted):
    port, _ = scripted(lambda m: None)
    with pytest.raises(ConnectionError):
        Styx("127.0.0.1", port, connect_timeout=0.2).find()


def test_a_timed_out_registration_is_flushed_then_clunked(scripted):
    port, received = scripted(polite)
    conn = Styx("127.0.0.1", port, connect_timeout=0.2)
    stream = conn.open_event()  # keeps the session up
    with pytest.raises(ConnectionError, match="no reply"):
        conn.open_new("svc")
    eventually(lambda: isinstance(received[-1], ninep.Tclunk))
    write = next(m for m in received if isinstance(m, ninep.Twrite))
    flush, clunk = received[-2:]
    assert isinstance(flush, ninep.Tflush) and flush.oldtag == write.tag
    assert clunk.fid == write.fid
    stream.close()


def test_a_killed_call_sends_tflush_and_keeps_its_tag_until_rflush(scripted, hub_errors):
    hub_errors.expect(ConnectionError, match="event stream closed")  # the second read's end
    port, received = scripted(lambda m: None if isinstance(m, ninep.Tflush) else polite(m))
    stream = Styx("127.0.0.1", port).open_event()
    read = gevent.spawn(stream.wait)
    eventually(lambda: isinstance(received[-1], ninep.Tread))
    tag = received[-1].tag
    read.kill()
    eventually(lambda: isinstance(received[-1], ninep.Tflush))
    assert received[-1].oldtag == tag
    second = gevent.spawn(stream.wait)
    eventually(lambda: isinstance(received[-1], ninep.Tread))
    assert received[-1].tag not in (tag, received[-2].tag)  # no Rflush yet: both still taken
    stream.close()
    with pytest.raises(ConnectionError):
        second.get(timeout=5)


@pytest.mark.parametrize("listing", [lambda conn: conn.find({"a": "b"}), lambda conn: conn.index()])
def test_an_endless_listing_is_a_protocol_error(scripted, listing):
    # A broken or hostile peer must not make a find hold unbounded memory: the
    # peer here would send 80 MiB of one valid line repeated, then end.
    line = b"s a " + b"x" * 65000 + b"\n"
    sent = [0]

    def answer(msg):
        if isinstance(msg, ninep.Tread):  # every read full: the listing goes on
            if sent[0] > 80 << 20:
                return ninep.Rread(msg.tag, b"")
            start = msg.offset % len(line)
            data = (line * 3)[start:start + msg.count]
            sent[0] += len(data)
            return ninep.Rread(msg.tag, data)
        if isinstance(msg, ninep.Twrite):
            return ninep.Rwrite(msg.tag, len(msg.data))
        return polite(msg)

    port, _ = scripted(answer)
    with gevent.Timeout(60), pytest.raises(ProtocolError, match="listing over"):
        listing(Styx("127.0.0.1", port, msize=65560))
    assert sent[0] < 80 << 20


def test_frames_queued_together_go_out_in_one_send():
    import gevent.socket

    from regmgr.connections.styxsession import Session

    class Counted:
        """The session's socket, counting its sends."""

        def __init__(self, sock):
            self.sock, self.sends = sock, 0

        def sendall(self, data):
            self.sends += 1
            return self.sock.sendall(data)

        def __getattr__(self, name):
            return getattr(self.sock, name)

    ours, theirs = gevent.socket.socketpair()
    counted = Counted(ours)
    session = Session(counted, "pair", 8192)
    try:
        for fid in (5, 6, 7):  # queued without a switch: the writer takes them all at once
            session.clunk(fid)
        decoder, frames = ninep.Decoder(8192), []
        while len(frames) < 3:
            decoder.feed(theirs.recv(65536))
            while (msg := decoder.next_message()) is not None:
                frames.append(msg)
        assert [(type(m), m.fid) for m in frames] == [(ninep.Tclunk, 5), (ninep.Tclunk, 6),
                                                      (ninep.Tclunk, 7)]
        assert counted.sends == 1
    finally:
        session.close()
        theirs.close()
