"""Styx finds through kept ``find`` fids: one read per repeated find, listings still exact."""
import gevent
from gevent.server import StreamServer

from regmgr import ninep
from regmgr.connections.styx import Styx
from serverutil import eventually


def styx(server, **kwargs):
    return Styx(server.host, server.styx_port, **kwargs)


def test_a_repeated_find_is_one_read_and_sees_every_change(registry_server):
    conn = styx(registry_server, msize=65560)
    keep = conn.open_new("keep", {"k": "1"})  # holds the session between finds
    assert conn.find({"k": "1"}) == {"keep": {"k": "1"}}
    other = conn.open_new("other", {"k": "1"})
    before = conn.requests_sent
    assert conn.find({"k": "1"}) == {"keep": {"k": "1"}, "other": {"k": "1"}}
    assert conn.requests_sent - before == 1  # Tread at offset 0, nothing else
    other.update({"k": "2"})
    assert conn.find({"k": "1"}) == {"keep": {"k": "1"}}
    assert conn.find() == {"keep": {"k": "1"}, "other": {"k": "2"}}  # its own fid, no filter
    other.close()
    keep.close()


def test_a_listing_longer_than_one_read(registry_server):
    conn = styx(registry_server, msize=256)
    regs = [conn.open_new(f"service-{i}", {"a": "x" * 20, "i": str(i)}) for i in range(40)]
    for _ in range(2):  # a new fid, then the kept one
        found = conn.find({"a": "x" * 20})
        assert found == {f"service-{i}": {"a": "x" * 20, "i": str(i)} for i in range(40)}
    for reg in regs:
        reg.close()


def test_finds_at_once_with_one_filter_use_one_fid_each(registry_server):
    conn = styx(registry_server, msize=256)
    regs = [conn.open_new(f"service-{i}", {"a": "x" * 20}) for i in range(30)]
    expected = {f"service-{i}": {"a": "x" * 20} for i in range(30)}
    for _ in range(3):
        finds = [gevent.spawn(conn.find, {"a": "x" * 20}) for _ in range(5)]
        gevent.joinall(finds, raise_error=True)
        assert all(find.value == expected for find in finds)
    for reg in regs:
        reg.close()


def test_idle_fids_are_bounded_and_die_with_their_session(registry_server):
    conn = styx(registry_server)
    keep = conn.open_new("keep")
    for i in range(20):
        conn.find({"n": str(i)})
    session = conn._session
    eventually(lambda: len(session._calls) == 0)
    assert session._next_fid - len(session._free_fids) <= 1 + 1 + conn._finder.keep
    keep.close()  # the last holder: the session ends, and the kept fids with it
    eventually(lambda: len(registry_server._styx._clients) == 0)
    assert conn.find() == {}  # a new session, a new fid


def test_a_server_that_caps_reads_at_iounit():
    """A reply that stops at a multiple of iounit is followed by one more read."""
    listing = b"".join(b"service-%d a %s\n" % (i, b"x" * 30) for i in range(20))
    iounit = 100
    qid = ninep.Qid(0, 0, 1)

    def answer(msg):
        if isinstance(msg, ninep.Tversion):
            return ninep.Rversion(msg.tag, msg.msize, "9P2000")
        if isinstance(msg, ninep.Tattach):
            return ninep.Rattach(msg.tag, ninep.Qid(ninep.QTDIR, 0, 0))
        if isinstance(msg, ninep.Twalk):
            return ninep.Rwalk(msg.tag, (qid,))
        if isinstance(msg, ninep.Topen):
            return ninep.Ropen(msg.tag, qid, iounit)
        if isinstance(msg, ninep.Twrite):
            return ninep.Rwrite(msg.tag, len(msg.data))
        if isinstance(msg, ninep.Tread):
            return ninep.Rread(msg.tag, listing[msg.offset:msg.offset + min(msg.count, iounit)])
        return ninep.Rclunk(msg.tag)

    def handle(sock, address):
        decoder = ninep.Decoder(65560)
        while data := sock.recv(65536):
            decoder.feed(data)
            while (msg := decoder.next_message()) is not None:
                sock.sendall(ninep.encode(answer(msg)))

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        found = Styx("127.0.0.1", server.server_port, msize=65560).find({"a": "x" * 30})
        assert len(listing) % iounit and found == {
            f"service-{i}": {"a": "x" * 30} for i in range(20)}
    finally:
        server.stop(timeout=0)
