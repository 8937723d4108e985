"""Only our own entries count (issue 10 items 2, 3): TCP confirmation, Styx adoption."""
import os
import sys

import gevent
import pytest
from gevent.event import Event
from gevent.server import StreamServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.faults import stale_entry_race  # noqa: E402
from regmgr import TCP, RegMgr, Service, Styx  # noqa: E402
from regmgr.errors import RegistryError  # noqa: E402
from serverutil import eventually, find, register  # noqa: E402


def tcp(server):
    return TCP(server.host, server.new_port, server.find_port, server.event_port)


def test_tcp_refuses_a_name_another_connection_holds(registry_server):
    holder = register(registry_server, b"svc a 1\n")
    eventually(lambda: "svc" in find(registry_server))
    with pytest.raises(RegistryError, match="duplicate service name"):
        tcp(registry_server).open_new("svc", {"a": "1"})  # same name, same attributes
    holder.close()


def test_tcp_never_confirms_a_stale_entry_of_the_same_name(registry_server):
    """The older entry goes away while we register: a success must be our own entry."""
    confirmed, not_ours = stale_entry_race(tcp(registry_server), lambda: find(registry_server), 40)
    assert not_ours == 0, f"{not_ours} of {confirmed} confirmed registrations were not ours"


def test_tcp_waits_for_the_find_after_the_one_that_listed_the_name():
    """A gateway that lists an older entry of the name, then refuses our line.

    Scripted to the registry's ordering at its limit: the refusal (closing
    our connection) comes only once the next find arrived, before it is
    answered. One find listing the name while our connection looked
    open was taken for success; the second find tells.
    """
    second_find, refused = Event(), Event()
    finds = []

    def new(sock, address):
        sock.recv(1024)
        second_find.wait(5)
        sock.close()  # refused: an older entry holds the name
        refused.set()

    def find_port(sock, address):
        sock.recv(1024)
        finds.append(1)
        if len(finds) > 1:
            second_find.set()
            refused.wait(5)
        sock.sendall(b"svc a 1\n")  # the older entry, with our very attributes
        sock.close()

    servers = [StreamServer(("127.0.0.1", 0), handle) for handle in (new, find_port)]
    for server in servers:
        server.start()
    try:
        conn = TCP("127.0.0.1", servers[0].server_port, servers[1].server_port, 1)
        with pytest.raises(RegistryError, match="duplicate service name"):
            conn.open_new("svc", {"a": "1"})
    finally:
        for server in servers:
            server.stop(timeout=0)


def test_tcp_does_not_take_an_entry_with_other_attributes_for_ours():
    """The name is listed, but not with what we sent: that entry is someone else's."""
    def new(sock, address):
        sock.recv(1024)
        gevent.sleep(5)  # never refused, never listed as ours

    def find_port(sock, address):
        sock.recv(1024)
        sock.sendall(b"svc a 2\n")
        sock.close()

    servers = [StreamServer(("127.0.0.1", 0), handle) for handle in (new, find_port)]
    for server in servers:
        server.start()
    try:
        conn = TCP("127.0.0.1", servers[0].server_port, servers[1].server_port, 1,
                   connect_timeout=0.5)
        with pytest.raises(ConnectionError, match="not listed"):
            conn.open_new("svc", {"a": "1"})
    finally:
        for server in servers:
            server.stop(timeout=0)


def test_styx_takes_back_its_own_persistent_entry(registry_server):
    first = Styx(registry_server.host, registry_server.styx_port, user="alice")
    registration = first.open_new("keep", {"persist": "1", "load": "1"})
    first._session.close()  # the client went away: the persistent entry stays
    registration.close()
    eventually(lambda: "keep" in find(registry_server))
    again = Styx(registry_server.host, registry_server.styx_port, user="alice")
    adopted = again.open_new("keep", {"persist": "1", "load": "2", "zone": "b"})
    eventually(lambda: find(registry_server)["keep"] == {"persist": "1", "load": "2", "zone": "b"})
    adopted.update({"load": "3"})
    eventually(lambda: find(registry_server)["keep"]["load"] == "3")
    adopted.close()


@pytest.mark.parametrize("user, attrs", [
    ("bob", {"persist": "1", "load": "1"}),  # another user's entry
    ("alice", {"persist": "1"}),  # the entry holds an attribute we do not send
    ("alice", {"load": "1"}),  # we do not register a persistent service
])
def test_styx_leaves_every_other_entry_alone(registry_server, user, attrs):
    owner = Styx(registry_server.host, registry_server.styx_port, user="alice")
    held = owner.open_new("keep", {"persist": "1", "load": "1"})
    other = Styx(registry_server.host, registry_server.styx_port, user=user)
    with pytest.raises(RegistryError, match="duplicate service name"):
        other.open_new("keep", attrs)
    assert find(registry_server)["keep"] == {"persist": "1", "load": "1"}
    held.update({"load": "2"})  # still the owner's
    eventually(lambda: find(registry_server)["keep"]["load"] == "2")
    held.close()


def test_styx_service_with_persist_is_back_after_its_client_restarts(registry_server):
    def styx():
        return Styx(registry_server.host, registry_server.styx_port, user="alice")

    with RegMgr(styx()) as mgr:
        svc = mgr.attach(Service("keep", {"persist": "1", "load": "1"}))
        eventually(lambda: svc.registered)
    with RegMgr(styx()) as mgr:
        svc = mgr.attach(Service("keep", {"persist": "1", "load": "1"}))
        eventually(lambda: svc.registered, timeout=10)
        svc.update({"load": "5"})
        eventually(lambda: find(registry_server)["keep"]["load"] == "5")


def test_tcp_cannot_take_back_a_persistent_entry_and_leaves_it(registry_server):
    """Documented: over TCP the Service retries with backoff; the entry is untouched."""
    holder = register(registry_server, b"keep persist 1 load 1\n")
    eventually(lambda: "keep" in find(registry_server))
    holder.close()
    with RegMgr(tcp(registry_server)) as mgr:
        svc = mgr.attach(Service("keep", {"persist": "1", "load": "2"}))
        gevent.sleep(1)  # several refused attempts
        assert not svc.registered
        assert find(registry_server)["keep"] == {"persist": "1", "load": "1"}
