"""The transport interface (Connection, EventStream, Registration) against a real registry."""
import gevent
import pytest

from regmgr.errors import RegistryError
from serverutil import eventually, spawn_blocked

WEIRD = {"empty": "", "space": "a b", "quote": "it's", "newline": "x\ny",
         "unicode": "ünïcødé", "tab": "a\tb", "star": "*"}


def test_find_on_an_empty_registry(connection_factory, registry_server):
    assert connection_factory(registry_server).find() == {}


def test_open_new_returns_once_listed(connection_factory, registry_server):
    conn = connection_factory(registry_server)
    reg = conn.open_new("svc", {"proto": "http"})
    try:
        assert reg.name == "svc"
        assert registry_server.index() == {"svc": {"proto": "http"}}
    finally:
        reg.close()
    eventually(lambda: registry_server.index() == {})


def test_attributes_round_trip(connection_factory, registry_server):
    conn = connection_factory(registry_server)
    reg = conn.open_new("weird 'name'".replace(" ", "_"), WEIRD)
    try:
        assert conn.find() == {"weird_'name'": WEIRD}
        assert conn.find({"newline": "x\ny", "space": "a b"}) == {"weird_'name'": WEIRD}
    finally:
        reg.close()


def test_find_filters(connection_factory, registry_server):
    conn = connection_factory(registry_server)
    regs = [conn.open_new("a", {"proto": "http", "n": "1", "nl": "x\ny"}),
            conn.open_new("b", {"proto": "ssh", "n": "2", "nl": "x\nz"}),
            conn.open_new("c", {"n": "3"})]
    try:
        assert set(conn.find({"proto": "*"})) == {"a", "b"}
        assert set(conn.find({"proto": "ssh"})) == {"b"}
        assert set(conn.find({"proto": "HTTP"})) == set()
        assert set(conn.find({})) == {"a", "b", "c"}
        assert set(conn.find({"nl": "x\ny"})) == {"a"}
        assert set(conn.find({"nl": "*", "n": "2"})) == {"b"}
    finally:
        for reg in regs:
            reg.close()


def test_update_adds_and_changes(connection_factory, registry_server):
    conn = connection_factory(registry_server)
    reg = conn.open_new("svc", {"a": "1"})
    try:
        reg.update({"a": "2", "b": "x y"})
        reg.update({})  # a no-op, never an empty write (that would unregister)
        eventually(lambda: conn.find() == {"svc": {"a": "2", "b": "x y"}})
    finally:
        reg.close()


def test_duplicate_name_is_a_registry_error(connection_factory, registry_server):
    conn = connection_factory(registry_server)
    first = conn.open_new("svc", {"owner": "first"})
    try:
        with pytest.raises(RegistryError, match="duplicate service name"):
            conn.open_new("svc", {"owner": "second"})
        with pytest.raises(RegistryError, match="duplicate service name"):
            conn.open_new("svc", {"owner": "first"})  # same attributes: still refused
        assert conn.find() == {"svc": {"owner": "first"}}
    finally:
        first.close()


@pytest.mark.parametrize("name, error", [
    ("a b", "bad character in service name"),
    ("a/b", "bad character in service name"),
    ("", "bad service name"),
    ("index", "bad service name"),
])
def test_bad_names_are_registry_errors(connection_factory, registry_server, name, error):
    with pytest.raises(RegistryError, match=error):
        connection_factory(registry_server).open_new(name)


def test_event_stream_reports_changes(connection_factory, registry_server):
    conn = connection_factory(registry_server)
    stream = conn.open_event()
    try:
        reg = conn.open_new("svc")
        first = stream.wait()
        reg.update({"a": "1"})
        assert stream.wait() > first
        reg.close()
        with gevent.Timeout(5):
            assert stream.wait() > first
    finally:
        stream.close()


def test_registration_wait_returns_after_close(connection_factory, registry_server):
    reg = connection_factory(registry_server).open_new("svc")
    waiter = spawn_blocked(reg.wait)
    reg.close()
    assert waiter.get(timeout=5) is None


def test_registry_death_breaks_streams_and_registrations(connection_factory, registry_server):
    conn = connection_factory(registry_server)
    stream = conn.open_event()
    reg = conn.open_new("svc")
    registry_server.stop()
    with gevent.Timeout(5):
        with pytest.raises(ConnectionError):
            while True:
                stream.wait()  # the registration's own event may come first
        with pytest.raises(ConnectionError):
            reg.wait()
        with pytest.raises(ConnectionError):
            conn.find()
        with pytest.raises(ConnectionError):
            conn.open_event()
        with pytest.raises(ConnectionError):
            conn.open_new("other")
    stream.close()
    reg.close()
