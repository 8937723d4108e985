"""ZooKeeperStore against a real ensemble of three: two stores are one registry.

Each store is what one ``regmgr serve --store zookeeper://...`` frontend
holds; these tests drive the store interface the frontends use.
"""
import gevent
import pytest

from regmgr.errors import RegistryError
from regmgr.server.state import Registry
from serverutil import eventually
from zkutil import restored

kazoo = pytest.importorskip("kazoo")

from kazoo.client import KazooClient  # noqa: E402
from kazoo.handlers.gevent import SequentialGeventHandler  # noqa: E402

from regmgr.server.zookeeper import UNAVAILABLE, ZooKeeperStore, node_key  # noqa: E402

SESSION = 2.0  # seconds: short, so that expiry tests are quick


@pytest.fixture
def make_store(zk_ensemble, zk_root):
    """``make(**kwargs)``: a started store on this test's root, closed at teardown."""
    stores = []

    def make(**kwargs):
        kwargs.setdefault("session_timeout", SESSION)
        store = ZooKeeperStore(zk_ensemble.hosts, zk_root, **kwargs)
        store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def register(store, line, owner="alice"):
    svc = store.create(owner)
    store.write(svc, line)
    return svc


def expire(ensemble, store):
    """End ``store``'s session from outside, as the ensemble does when it times out."""
    other = KazooClient(hosts=ensemble.hosts, client_id=store.client_id,
                        handler=SequentialGeventHandler())
    other.start(timeout=10)
    other.stop()
    other.close()


def test_registered_on_one_is_found_and_evented_on_the_other(make_store):
    a, b = make_store(), make_store()
    watcher = b.watch()
    register(a, "tcp!h!1 proto http")
    assert a.index() == "tcp!h!1 proto http\n"  # the writer sees its write at once
    eventually(lambda: b.index() == "tcp!h!1 proto http\n")
    assert watcher.poll() is not None
    assert b.find([("proto", "*")]) == "tcp!h!1 proto http\n"


def test_a_name_is_unique_across_stores(make_store):
    a, b = make_store(), make_store()
    register(a, "dup x 1")
    with pytest.raises(RegistryError, match="duplicate service name"):
        register(b, "dup y 2")
    # A race with no mirror in time to see it: ZooKeeper decides, once.
    results = []

    def claim(store, n):
        try:
            register(store, f"race n {n}")
            results.append(n)
        except RegistryError as err:
            assert str(err) == "duplicate service name"

    gevent.joinall([gevent.spawn(claim, store, n) for n in range(10) for store in (a, b)])
    assert len(results) == 1
    eventually(lambda: a.get("race") is not None and b.get("race") is not None)
    assert a.get("race").attrs == b.get("race").attrs


def test_attribute_order_and_quoting_travel_as_text(make_store):
    a, b = make_store(), make_store()
    svc = register(a, "'it''s' x 1 y 2 a 3 z 4")
    a.write(svc, "a 5 'sp ace' 'new\nline' e ''")
    for name in (".", "..", "ünï/côdé".replace("/", "-")):
        register(a, f"{name} k v")
    eventually(lambda: len(b) == 4)
    assert b.get("it's").line == a.get("it's").line
    memory = Registry()  # the memory store's answer is the reference
    ref = memory.create("alice")
    memory.write(ref, "'it''s' x 1 y 2 a 3 z 4")
    memory.write(ref, "a 5 'sp ace' 'new\nline' e ''")
    assert b.get("it's").attrs == ref.attrs
    assert b.get("it's").line == ref.line
    assert sorted(b.index().splitlines()) == sorted(a.index().splitlines())
    assert node_key("..") != ".."


def test_a_second_writer_merges_into_the_current_attributes(make_store):
    a, b = make_store(), make_store()
    mine = register(a, "shared one 1")
    eventually(lambda: b.get("shared") is not None)
    b.write(b.get("shared"), "two 2")  # a second fid, on the other frontend
    a.write(mine, "three 3")  # A's mirror may not have seen B's write yet
    eventually(lambda: b.get("shared").attrs == a.get("shared").attrs)
    assert dict(a.get("shared").attrs) == {"one": "1", "two": "2", "three": "3"}


def test_release_deletes_a_registration_but_not_a_persistent_one(make_store):
    a, b = make_store(), make_store()
    plain = register(a, "plain x 1")
    later = register(a, "later x 1")
    register(a, "static persist 1")
    a.write(later, "persist 1")  # persistence added by an update
    eventually(lambda: len(b) == 3)
    a.release(plain)
    a.release(later)
    eventually(lambda: b.get("plain") is None and a.get("plain") is None)
    a.close()  # the frontend goes: its ephemeral nodes go, persistent ones stay
    gevent.sleep(0.5)
    assert sorted(b.index().splitlines()) == ["later persist 1 x 1", "static persist 1"]


def test_only_the_owner_removes_from_any_frontend(make_store):
    a, b = make_store(), make_store()
    register(a, "kept persist 1", owner="alice")
    eventually(lambda: b.get("kept") is not None)
    with pytest.raises(RegistryError, match="permission denied"):
        b.remove(b.get("kept"), "mallory")
    b.remove(b.get("kept"), "alice")
    assert b.get("kept") is None
    eventually(lambda: a.get("kept") is None)


def test_orclose_removes_even_a_persistent_service(make_store):
    a, b = make_store(), make_store()
    svc = register(a, "gone persist 1")
    eventually(lambda: b.get("gone") is not None)
    a.release(svc, force=True)
    eventually(lambda: b.get("gone") is None)


def test_static_db_loaded_by_several_frontends_yields_each_service_once(make_store):
    a, b = make_store(), make_store()
    assert a.add_static("net!click!1234", [("auth", "none")])
    assert b.add_static("net!click!1234", [("auth", "none")])
    eventually(lambda: b.index() == a.index() == "net!click!1234 auth none\n")


def test_events_only_grow_and_follow_every_change(make_store):
    a, b = make_store(), make_store()
    versions = []
    b.subscribe(versions.append)
    svc = register(a, "ev x 1")
    eventually(lambda: b.get("ev") is not None)
    a.write(svc, "x 2")
    eventually(lambda: b.get("ev").get("x") == "2")
    a.release(svc)
    eventually(lambda: b.get("ev") is None)
    assert len(versions) >= 3 and versions == sorted(versions)


def test_a_zookeeper_server_killed_is_not_noticed(zk_ensemble, make_store):
    # Sessions long enough to outlast an election on a busy machine.
    a, b = make_store(session_timeout=10.0), make_store(session_timeout=10.0)
    lost = []
    a.add_serving_listener(lost.append)
    b.add_serving_listener(lost.append)
    svc = register(a, "survivor n 0")
    with restored(zk_ensemble):
        for i in range(zk_ensemble.size):
            zk_ensemble.kill(i)
            for n in range(1, 4):
                a.write(svc, f"n {i}{n}")  # held while kazoo moves to another server
            eventually(lambda i=i: b.get("survivor") is not None
                       and b.get("survivor").get("n") == f"{i}3", timeout=10)
            zk_ensemble.start_server(i)
            zk_ensemble.wait_serving([i])
    assert lost == []


def test_suspended_reads_from_the_mirror_holds_updates_refuses_registrations(
        zk_ensemble, make_store):
    a = make_store(session_timeout=10.0, write_timeout=0.5)
    b = make_store(session_timeout=10.0)
    svc = register(a, "held x 1")
    with restored(zk_ensemble):
        zk_ensemble.kill(0)
        zk_ensemble.kill(1)  # no quorum: every connection is refused
        assert a.index() == "held x 1\n"
        a.write(svc, "x 2")  # an update is taken at once, written when the ensemble is back
        assert a.index() == "held x 2\n"
        with pytest.raises(RegistryError, match=UNAVAILABLE):
            for n in range(50):  # until kazoo notices the loss, a registration may pass
                register(a, f"new{n} y 1")
                gevent.sleep(0.1)
        assert a.serving  # the session may still live: clients stay
    eventually(lambda: b.get("held") is not None and b.get("held").get("x") == "2", timeout=15)
    register(a, "after y 1")  # registrations too, once a quorum is back


def test_session_expiry_stops_serving_until_a_new_session(zk_ensemble, make_store):
    a, b = make_store(), make_store()
    changes = []
    a.add_serving_listener(changes.append)
    register(a, "mine x 1")
    register(a, "stays persist 1")
    eventually(lambda: len(b) == 2)
    expire(zk_ensemble, a)
    eventually(lambda: changes[:1] == [False], timeout=30)
    eventually(lambda: b.get("mine") is None, timeout=30)  # its ephemeral node went
    eventually(lambda: changes == [False, True], timeout=30)
    assert a.serving
    eventually(lambda: a.index() == b.index() == "stays persist 1\n")
    register(a, "again x 2")  # a new session takes writes again
    eventually(lambda: b.get("again") is not None)


def test_a_bad_store_url_is_refused_before_any_io():
    from regmgr.server.store import MemoryStore, StoreError, open_store

    assert isinstance(open_store(None), MemoryStore)
    assert isinstance(open_store("memory:"), MemoryStore)
    for url in ("redis://h/x", "zookeeper:///regmgr"):
        with pytest.raises(StoreError):
            open_store(url)


def test_a_store_says_why_when_the_ensemble_does_not_answer():
    import socket

    from regmgr.server.store import StoreError

    with socket.socket() as sock:  # a port nothing listens on (taken, then released)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = ZooKeeperStore(f"127.0.0.1:{port}", "/x", connect_timeout=1)
    with pytest.raises(StoreError, match="cannot reach ZooKeeper"):
        store.start()
