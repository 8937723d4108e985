"""Connection objects pickle their configuration only (GunicornHooks hands
them to its keeper process that way); a copy builds its own runtime state."""
import pickle

import pytest

from regmgr import TCP, Styx
from regmgr.contrib.wsgi import GunicornHooks
from serverutil import eventually


def public(conn):
    return {k: v for k, v in vars(conn).items() if not k.startswith("_")}


def test_a_copy_keeps_every_setting():
    for conn in (TCP("h", new_port=1, find_port=2, event_port=3, connect_timeout=7),
                 Styx("h", 9, user="alice", msize=4096, connect_timeout=7)):
        copy = pickle.loads(pickle.dumps(conn))
        assert type(copy) is type(conn) and repr(copy) == repr(conn)
        assert public(copy) == public(conn)


def test_a_connection_in_use_pickles_and_the_copy_works(connection_factory, registry_server):
    conn = connection_factory(registry_server)
    held = conn.open_new("held", {"proto": "http"})  # a live session / socket in the original
    events = conn.open_event()
    copy = pickle.loads(pickle.dumps(conn))
    assert copy.find({"proto": "http"}) == {"held": {"proto": "http"}}
    mine = copy.open_new("mine", {"proto": "ssh"})
    copy_events = copy.open_event()
    # The original's streams and sessions are its own: closing them leaves the copy working.
    held.close()
    events.close()
    assert copy.find() == {"mine": {"proto": "ssh"}}
    mine.update({"load": "1"})
    assert copy_events.wait() > 0  # the copy's own event stream hears the registry
    eventually(lambda: copy.find() == {"mine": {"proto": "ssh", "load": "1"}})
    mine.close()
    copy_events.close()
    assert conn.find() == {}


class Unpicklable(TCP):
    def __getstate__(self):
        raise TypeError("no")


def test_gunicorn_hooks_refuse_an_unpicklable_connection_in_the_config_file():
    with pytest.raises(TypeError, match="cannot be pickled"):
        GunicornHooks(Unpicklable("127.0.0.1"))
    assert GunicornHooks(Styx("127.0.0.1")).connection.port == 6675
