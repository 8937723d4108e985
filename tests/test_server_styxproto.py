"""The Styx server's protocol state without sockets (registry4.md §3-5, §7, §9).

Expected values are the spec's literals (qid paths, error texts), never the
implementation's constants, so that changing a constant fails a test.
"""
import pytest

from regmgr import ninep as T
from regmgr.ninep import NOFID, NOTAG, ORCLOSE, ORDWR, OREAD, OTRUNC, OWRITE
from regmgr.server.state import Registry
from regmgr.server.styxproto import Listings, StyxSession

ROOT, NEW, INDEX, EVENT, FIND = 0, 1, 2, 3, 4


class Peer:
    """One session driven by message values; tags are fresh per request."""

    def __init__(self, registry, uname="alice", msize=8192):
        self.session = StyxSession(registry, started=1000)
        self._tag = 0
        assert self.one(T.Tversion(NOTAG, msize, "9P2000")) == T.Rversion(NOTAG, msize, "9P2000")
        assert isinstance(self.one(T.Tattach(self.tag(), 0, NOFID, uname, "")), T.Rattach)
        self._fid = 0

    def tag(self):
        self._tag += 1
        return self._tag

    def all(self, msg):
        return self.session.handle(msg)

    def one(self, msg):
        replies = self.session.handle(msg)
        assert len(replies) == 1, replies
        return replies[0]

    def error(self, msg):
        reply = self.one(msg)
        assert isinstance(reply, T.Rerror), reply
        return reply.ename

    def walk(self, *names):
        self._fid += 1
        reply = self.one(T.Twalk(self.tag(), 0, self._fid, names))
        assert isinstance(reply, T.Rwalk) and len(reply.qids) == len(names), reply
        return self._fid

    def open(self, name, mode):
        fid = self.walk(name)
        reply = self.one(T.Topen(self.tag(), fid, mode))
        assert isinstance(reply, T.Ropen), reply
        return fid, reply.qid

    def write(self, fid, text):
        return self.one(T.Twrite(self.tag(), fid, 0, text.encode()))

    def read(self, fid, offset=0, count=8000):
        reply = self.one(T.Tread(self.tag(), fid, offset, count))
        assert isinstance(reply, T.Rread), reply
        return reply.data

    def stat(self, fid):
        return self.one(T.Tstat(self.tag(), fid)).stat


@pytest.fixture
def registry():
    return Registry()


@pytest.fixture
def peer(registry):
    return Peer(registry)


# -- version ---------------------------------------------------------------

def test_requests_before_version_are_refused(registry):
    session = StyxSession(registry, started=0)
    [reply] = session.handle(T.Tattach(1, 0, NOFID, "u", ""))
    assert reply == T.Rerror(1, "Tversion not seen")
    assert session.handle(T.Tversion(NOTAG, 100, "9P2000")) == [T.Rerror(NOTAG, "message size too small")]
    assert session.handle(T.Tversion(NOTAG, 1 << 20, "9P2000.u")) == [T.Rversion(NOTAG, 65560, "9P2000")]
    assert session.msize == 65560
    assert session.handle(T.Tversion(NOTAG, 8192, "Styx")) == [T.Rversion(NOTAG, 8192, "unknown")]
    assert session.msize == 0


def test_an_r_message_is_a_protocol_error(peer):
    with pytest.raises(T.NinepError):
        peer.session.handle(T.Rflush(1))


def test_auth_and_attach(peer):
    assert peer.error(T.Tauth(9, 5, "alice", "")) == "authentication not required"
    assert peer.error(T.Tattach(9, 0, NOFID, "bob", "")) == "fid already in use"


# -- qids (registry4.md §9) ------------------------------------------------

def test_static_qids_are_ndb_registry_s(peer):
    reply = peer.one(T.Twalk(peer.tag(), 0, 1, ("new",)))
    assert reply.qids[0].path == NEW
    for name, path in [("index", INDEX), ("event", EVENT), ("find", FIND)]:
        assert peer.one(T.Twalk(peer.tag(), 0, 9, (name,))).qids[0].path == path
        peer.one(T.Tclunk(peer.tag(), 9))
    root = peer.one(T.Tstat(peer.tag(), 0)).stat
    assert (root.qid.type, root.qid.path, root.mode) == (0x80, 0, 0x80000000 | 0o777)


def test_service_qid_path_is_id_shifted_4_or_5_and_ids_count_opens_of_new(registry, peer):
    first, qid0 = peer.open("new", OWRITE)
    probe, qid1 = peer.open("new", OWRITE)  # never named: still takes id 1
    third, qid2 = peer.open("new", ORDWR)
    assert [qid0.path, qid1.path, qid2.path] == [0x05, 0x15, 0x25]
    assert peer.write(third, "web proto http") == T.Rwrite(peer._tag, 14)
    fid = peer.walk("web")
    assert peer.stat(fid).qid.path == 0x25


def test_service_qid_vers_counts_its_writes(peer):
    fid, qid = peer.open("new", OWRITE)
    assert qid.vers == 0
    for n in range(1, 4):
        peer.write(fid, f"web n {n}" if n == 1 else f"n {n}")
        assert peer.stat(fid).qid.vers == n
    other = Peer(peer.session.registry, "bob")
    assert other.stat(other.walk("web")).qid.vers == 3


def test_service_file_stat(peer):
    fid, _ = peer.open("new", OWRITE)
    peer.write(fid, "web")
    st = peer.stat(fid)
    assert (st.name, st.uid, st.gid, st.mode, st.mtime) == ("web", "alice", "alice", 0o644, 1000)


# -- walks and opens ---------------------------------------------------------

def test_walk_errors(peer):
    assert peer.error(T.Twalk(peer.tag(), 7, 8, ())) == "bad fid"
    assert peer.error(T.Twalk(peer.tag(), 0, 0, ("nosuch",))) == "file does not exist"
    fid = peer.walk("index")
    assert peer.error(T.Twalk(peer.tag(), fid, 50, ("x",))) == "not a directory"
    assert peer.error(T.Twalk(peer.tag(), 0, fid, ())) == "fid already in use"
    # a walk that stops part way answers the qids it got and leaves newfid unset
    reply = peer.one(T.Twalk(peer.tag(), 0, 60, ("index", "x")))
    assert len(reply.qids) == 1
    assert peer.error(T.Tclunk(peer.tag(), 60)) == "bad fid"
    assert peer.one(T.Twalk(peer.tag(), 0, 61, ("..",))).qids[0].path == ROOT


@pytest.mark.parametrize("name, mode, error", [
    ("index", OWRITE, "permission denied"),
    ("event", ORDWR, "permission denied"),
    ("index", OREAD | OTRUNC, "permission denied"),
    ("new", 3, "bad argument"),                # OEXEC
    ("new", 0x80 | OWRITE, "bad argument"),
])
def test_open_modes(peer, name, mode, error):
    fid = peer.walk(name)
    assert peer.error(T.Topen(peer.tag(), fid, mode)) == error


def test_root_opens_for_reading_only(peer):
    assert peer.error(T.Topen(peer.tag(), 0, OWRITE)) == "permission denied"
    assert peer.error(T.Topen(peer.tag(), 0, OREAD | ORCLOSE)) == "permission denied"
    assert isinstance(peer.one(T.Topen(peer.tag(), 0, OREAD)), T.Ropen)
    assert peer.error(T.Topen(peer.tag(), 0, OREAD)) == "fid already opened"
    assert peer.error(T.Twalk(peer.tag(), 0, 5, ())) == "fid already opened"


def test_ropen_iounit_is_8192_or_less(registry):
    small = Peer(registry, msize=1024)
    fid = small.walk("index")
    assert small.one(T.Topen(small.tag(), fid, OREAD)).iounit == 1024 - 24
    big = Peer(registry, msize=65560)
    fid = big.walk("index")
    assert big.one(T.Topen(big.tag(), fid, OREAD)).iounit == 8192


def test_reads_and_writes_need_a_suitable_open(peer):
    fid = peer.walk("index")
    assert peer.error(T.Tread(peer.tag(), fid, 0, 10)) == "read/write -- on non open fid"
    new, _ = peer.open("new", OWRITE)
    assert peer.error(T.Tread(peer.tag(), new, 0, 10)) == "read/write -- not open in suitable mode"
    idx, _ = peer.open("index", OREAD)
    assert peer.error(T.Twrite(peer.tag(), idx, 0, b"x")) == "read/write -- not open in suitable mode"
    assert peer.error(T.Tread(peer.tag(), idx, 0, 9000)) == "read/write -- count negative or exceeds msgsize"
    assert peer.error(T.Tread(peer.tag(), idx, 1 << 63, 10)) == "read/write -- bad offset"
    assert peer.error(T.Tcreate(peer.tag(), 0, "x", 0o644, OWRITE)) == "permission denied"
    assert peer.error(T.Twstat(peer.tag(), idx, peer.stat(idx))) == "permission denied"


# -- registering, finding, removing ------------------------------------------

def test_register_find_and_clunk(registry, peer):
    new, _ = peer.open("new", OWRITE)
    assert peer.error(T.Twrite(peer.tag(), new, 0, b"find")) == "bad service name"
    peer.write(new, "web proto http")
    find, _ = peer.open("find", ORDWR)
    peer.write(find, "proto *")
    assert peer.read(find) == b"web proto http\n"
    assert peer.read(find, offset=15) == b""
    peer.write(find, "proto ftp")
    assert peer.read(find, offset=3) == b" proto http\n"  # offset > 0: the old listing
    assert peer.read(find) == b""
    assert isinstance(peer.one(T.Tclunk(peer.tag(), new)), T.Rclunk)
    assert registry.index() == ""


def test_persistent_service_stays_and_only_its_owner_removes_it(registry, peer):
    new, _ = peer.open("new", OWRITE)
    peer.write(new, "db persist 1")
    peer.one(T.Tclunk(peer.tag(), new))
    assert registry.index() == "db persist 1\n"
    bob = Peer(registry, "bob")
    assert bob.error(T.Tremove(bob.tag(), bob.walk("db"))) == "permission denied"
    fid = peer.walk("db")
    assert peer.one(T.Tremove(77, fid)) == T.Rremove(77)
    assert registry.index() == ""
    assert peer.error(T.Tremove(peer.tag(), 0)) == "permission denied"  # the root


def test_orclose_removes_even_a_persistent_service(registry, peer):
    new, _ = peer.open("new", OWRITE | ORCLOSE)
    peer.write(new, "db persist 1")
    peer.one(T.Tclunk(peer.tag(), new))
    assert registry.index() == ""


def test_close_clunks_every_fid(registry, peer):
    new, _ = peer.open("new", OWRITE)
    peer.write(new, "web")
    assert registry.index() == "web\n"
    peer.session.close()
    assert registry.index() == ""


def test_writes_to_a_gone_service(registry, peer):
    new, _ = peer.open("new", OWRITE)
    peer.write(new, "web")
    other = peer.walk("web")
    peer.one(T.Topen(peer.tag(), other, OWRITE))
    peer.one(T.Tclunk(peer.tag(), new))
    assert peer.error(T.Twrite(peer.tag(), other, 0, b"a b")) == "buggy program!"


# -- event reads, tags and flush ---------------------------------------------

def test_event_read_blocks_until_a_change_and_is_coalesced(registry, peer):
    ev, _ = peer.open("event", OREAD)
    tag = peer.tag()
    assert peer.all(T.Tread(tag, ev, 0, 100)) == []
    assert peer.session.changed() == []  # nothing changed yet
    writer = Peer(registry, "bob")
    new, _ = writer.open("new", OWRITE)
    writer.write(new, "web")
    assert peer.session.changed() == [T.Rread(tag, b"00000001\n")]
    writer.write(new, "a b")
    writer.write(new, "a c")
    assert peer.session.changed() == []  # no read is waiting
    assert peer.read(ev) == b"00000003\n"
    assert peer.all(T.Tread(peer.tag(), ev, 0, 5)) == []
    writer.write(new, "c d")
    assert [r.data for r in peer.session.changed()] == [b"00000"]  # cut to the count


def test_second_event_read_and_reused_tag(registry, peer):
    ev, _ = peer.open("event", OREAD)
    assert peer.all(T.Tread(50, ev, 0, 100)) == []
    assert peer.error(T.Tread(51, ev, 0, 100)) == "concurrent read for event fid"
    ev2, _ = peer.open("event", OREAD)
    assert peer.error(T.Tread(50, ev2, 0, 100)) == "tag in use"


def test_flush_cancels_a_blocked_read(registry, peer):
    ev, _ = peer.open("event", OREAD)
    assert peer.all(T.Tread(50, ev, 0, 100)) == []
    assert peer.one(T.Tflush(51, 50)) == T.Rflush(51)
    registry.write(registry.create("bob"), "web")
    assert peer.session.changed() == []  # the flushed read gets no reply
    assert peer.read(ev) == b"00000001\n"
    assert peer.one(T.Tflush(52, 999)) == T.Rflush(52)  # unknown tag: still Rflush


def test_clunk_ends_a_blocked_read_with_an_error(peer):
    ev, _ = peer.open("event", OREAD)
    assert peer.all(T.Tread(50, ev, 0, 100)) == []
    assert peer.all(T.Tclunk(51, ev)) == [T.Rerror(50, "bad fid"), T.Rclunk(51)]


# -- directory and encoding ----------------------------------------------------

def test_directory_read_lists_the_files_and_services(registry, peer):
    new, _ = peer.open("new", OWRITE)
    peer.write(new, "web")
    peer.one(T.Topen(peer.tag(), 0, OREAD))
    names = [st.name for st in T.decode_stats(peer.read(0))]
    assert names == ["new", "index", "find", "event", "web"]


def test_a_reply_over_msize_becomes_an_error(registry):
    peer = Peer(registry, msize=256)
    frame = peer.session.encode(T.Rread(7, b"x" * 300))
    decoder = T.Decoder(256)
    decoder.feed(frame)
    assert decoder.next_message() == T.Rerror(7, "Styx reply didn't fit")


# -- bounded memory ------------------------------------------------------------

def big_registry(count=2000):
    registry = Registry()
    for i in range(count):
        registry.write(registry.create("x"), f"svc{i} kind bulk pad {'p' * 100}")
    return registry


def test_fids_reading_one_listing_share_one_snapshot(registry):
    registry = big_registry()
    listings = Listings(registry)
    peers = [Peer(registry) for _ in range(3)]
    for peer in peers:
        peer.session.listings = listings
    fids = [(peer, peer.open("index", OREAD)[0]) for peer in peers for _ in range(50)]
    datas = {id(peer.session.fids[fid].snap) for peer, fid in fids if peer.read(fid)}
    assert len(datas) == 1
    size = len(registry.index().encode())
    assert all(peer.session.held_bytes == size for peer in peers)
    # a new version makes a new snapshot; the old one is held only while a fid holds it
    registry.write(registry.create("y"), "more")
    peer, fid = fids[0]
    peer.read(fid)
    assert peer.session.held_bytes > 2 * size - 10
    for _, other in fids[1:50]:
        peer.one(T.Tclunk(peer.tag(), other))
    assert peer.session.held_bytes == len(registry.index().encode())


def test_held_bytes_are_bounded_per_session(monkeypatch):
    import regmgr.server.styxproto as proto
    monkeypatch.setattr(proto, "MAX_HELD_BYTES", 150_000)
    registry = big_registry(500)  # ~60 KB listing
    peer = Peer(registry)
    first, _ = peer.open("index", OREAD)
    assert peer.read(first)  # one listing over the bound is always readable
    finds = []
    for i in range(3):
        fid, _ = peer.open("find", ORDWR)
        peer.write(fid, f"kind bulk x{i} *" if i else "kind bulk")
        finds.append(fid)
    assert peer.read(finds[0])
    assert peer.session.held_bytes > 100_000  # two listings
    peer.write(finds[1], "kind *")  # a different filter: another snapshot
    assert peer.error(T.Tread(peer.tag(), finds[1], 0, 100)) == \
        "too much file data held open: clunk some fids"
    peer.one(T.Tclunk(peer.tag(), first))
    peer.one(T.Tclunk(peer.tag(), finds[0]))
    assert peer.read(finds[1])


def test_fids_per_session_are_bounded(monkeypatch):
    import regmgr.server.styxproto as proto
    monkeypatch.setattr(proto, "MAX_FIDS", 10)
    peer = Peer(Registry())
    for fid in range(1, 10):
        assert isinstance(peer.one(T.Twalk(peer.tag(), 0, fid, ())), T.Rwalk)
    assert peer.error(T.Twalk(peer.tag(), 0, 10, ())) == "too many fids"
    peer.one(T.Tclunk(peer.tag(), 9))
    assert isinstance(peer.one(T.Twalk(peer.tag(), 0, 10, ())), T.Rwalk)


def test_directory_reads_return_whole_entries(registry, peer):
    for i in range(30):
        registry.write(registry.create("x"), f"service-{i:02}")
    peer.one(T.Topen(peer.tag(), 0, OREAD))
    names, offset = [], 0
    while True:
        data = peer.read(0, offset, 200)
        if not data:
            break
        names += [st.name for st in T.decode_stats(data)]
        offset += len(data)
    assert names == ["new", "index", "find", "event"] + [f"service-{i:02}" for i in range(30)]
    assert peer.read(0, 0, 10) == b""  # no whole entry fits
