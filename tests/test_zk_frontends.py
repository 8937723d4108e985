"""Several ``regmgr serve --store zookeeper://...`` frontends are one registry.

Real frontends (in-process RegistryServer, or ``regmgr serve`` children),
real clients, a real three-server ensemble.
"""
import pytest

from regmgr import Monitor, RegMgr, Service, Styx
from regmgr.cli import main
from regmgr.errors import RegistryError
from regmgr.testing import RegistryProcess, RegistryServer
from serverutil import closed_by_server, connect, eventually, find, register
from zkutil import restored

pytest.importorskip("kazoo")

from test_zk_store import expire  # noqa: E402

SESSION = 2.0


@pytest.fixture
def frontends(zk_ensemble, zk_root):
    """``make()``: a started in-process frontend over the ensemble, stopped at teardown."""
    started = []

    def make(**kwargs):
        kwargs.setdefault("session_timeout", SESSION)
        server = RegistryServer(store=zk_ensemble.url(zk_root), **kwargs)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def test_registered_on_a_found_and_evented_on_b(frontends, connection_factory):
    a, b = frontends(), frontends()
    seen = []
    with RegMgr(connection_factory(b)) as watcher, RegMgr(connection_factory(a)) as owner:
        watcher.attach(Monitor({"proto": "*"}, on_add=lambda name, attrs: seen.append(name),
                               settle=0))
        assert watcher.wait_connected(5)
        svc = owner.attach(Service("tcp!h!1", {"proto": "http"}))
        eventually(lambda: seen == ["tcp!h!1"], timeout=30)
        assert b.index() == {"tcp!h!1": {"proto": "http"}}
        owner.detach(svc)
        eventually(lambda: b.index() == {}, timeout=30)


def test_a_duplicate_across_frontends_is_refused(frontends):
    a, b = frontends(), frontends()
    first = register(a, b"dup x 1\n")
    eventually(lambda: "dup" in b.index())
    second = register(b, b"dup y 2\n")
    assert closed_by_server(second)  # the gateway's refusal: the connection closes
    assert find(a) == find(b) == {"dup": {"x": "1"}}
    first.close()
    eventually(lambda: find(b) == {})


def test_a_zookeeper_server_killed_goes_unnoticed_by_clients(zk_ensemble, frontends):
    # Sessions long enough to outlast an election on a busy machine.
    a, b = frontends(session_timeout=10.0), frontends(session_timeout=10.0)
    held = register(a, b"steady n 0\n")
    with restored(zk_ensemble):
        for i in range(zk_ensemble.size):
            zk_ensemble.kill(i)
            held.sendall(b"n %d\n" % i)
            eventually(lambda: find(b).get("steady") == {"n": str(i)}, timeout=30)
            zk_ensemble.start_server(i)
            zk_ensemble.wait_serving([i])
    assert not closed_by_server(held, timeout=0.2)


def test_session_expiry_closes_every_client_and_refuses_new_ones(zk_ensemble, frontends):
    a, b = frontends(), frontends()
    held = register(a, b"mine x 1\n")
    eventually(lambda: "mine" in b.index())
    expire(zk_ensemble, a.registry)
    assert closed_by_server(held, timeout=30)
    eventually(lambda: "mine" not in b.index(), timeout=30)
    # Listening again once a new session has loaded the mirror.
    eventually(lambda: a.registry.serving, timeout=30)
    again = register(a, b"again x 2\n")
    eventually(lambda: "again" in b.index(), timeout=30)
    again.close()


def test_a_frontend_killed_its_services_go_after_the_session_timeout(zk_ensemble, zk_root):
    url = zk_ensemble.url(zk_root)
    with RegistryProcess(store=url, session_timeout=SESSION) as doomed, \
            RegistryProcess(store=url, session_timeout=SESSION) as survivor:
        held = connect(doomed.new_port)
        held.sendall(b"victim x 1\n")
        eventually(lambda: "victim" in survivor.index(), timeout=30)
        doomed.kill()
        eventually(lambda: "victim" not in survivor.index(), timeout=SESSION + 10)
        held.close()


def test_persistent_services_are_removed_by_their_owner_through_any_frontend(frontends):
    a, b = frontends(), frontends()
    alice_a = Styx(a.host, a.styx_port, user="alice")
    registration = alice_a.open_new("kept", {"persist": "1"})
    registration.close()  # the connection ends: a persistent service stays
    eventually(lambda: "kept" in b.index())
    with pytest.raises(RegistryError, match="permission denied"):
        Styx(b.host, b.styx_port, user="mallory").remove("kept")
    Styx(b.host, b.styx_port, user="alice").remove("kept")
    eventually(lambda: "kept" not in a.index() and "kept" not in b.index())


def test_the_cli_takes_several_hosts(frontends, capsys):
    a = frontends()
    held = register(a, b"listed proto http\n")
    eventually(lambda: "listed" in a.index())
    assert main(["find", "--host", "127.0.0.1,127.0.0.1", "--find-port", str(a.find_port),
                 "proto", "http"]) == 0
    assert "listed" in capsys.readouterr().out
    held.close()
