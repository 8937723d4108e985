"""Clients that fail over between the frontends of one replicated registry."""

import pytest

from regmgr import TCP, Monitor, RegMgr, Service, Styx
from regmgr.testing import RegistryProcess, RegistryServer
from serverutil import eventually

SESSION = 2.0


def tcp_registries(*servers):
    return TCP([(s.host, s.new_port, s.find_port, s.event_port) for s in servers])


def styx_registries(*servers):
    return Styx([(s.host, s.styx_port) for s in servers])


FAILOVER = {"tcp": tcp_registries, "styx": styx_registries}


@pytest.fixture(params=sorted(FAILOVER))
def registries(request):
    """``make(*servers)``: one connection over several registries, in turn."""
    return FAILOVER[request.param]


def test_a_list_of_registries_is_checked_before_any_io():
    with pytest.raises(TypeError):
        TCP([])
    with pytest.raises(TypeError):
        TCP([("h", 1)])
    with pytest.raises(TypeError):
        Styx([("h", "port")])
    assert TCP(["a", "b"], 1, 2, 3).registries == [("a", 1, 2, 3), ("b", 1, 2, 3)]
    assert Styx(["a", ("b", 7)], 9).registries == [("a", 9), ("b", 7)]


def test_each_reconnection_moves_to_the_next_registry(registries):
    with RegistryServer() as a, RegistryServer() as b:
        with RegMgr(registries(a, b)) as mgr:
            mgr.attach(Service("roaming", {"n": "1"}))
            eventually(lambda: "roaming" in a.index(), timeout=30)
            a.stop()  # a dying registry: its clients reconnect to the next
            eventually(lambda: "roaming" in b.index(), timeout=15)
            a.start()
            b.stop()  # and from the last back to the first
            eventually(lambda: "roaming" in a.index(), timeout=15)


zk = pytest.mark.usefixtures("zk_ensemble")


def on(conn, server):
    """Whether ``conn`` now uses ``server`` (of its list)."""
    if isinstance(conn, TCP):
        return conn.event_port == server.event_port
    return conn.port == server.styx_port


@zk
def test_a_frontend_killed_its_clients_fail_over_and_a_monitor_sees_it(
        zk_ensemble, zk_root, registries):
    pytest.importorskip("kazoo")
    url = zk_ensemble.url(zk_root)
    seen = []
    with RegistryProcess(store=url, session_timeout=SESSION) as doomed, \
            RegistryProcess(store=url, session_timeout=SESSION) as other:
        conn = registries(doomed, other)
        with RegMgr(registries(other)) as watcher, RegMgr(conn) as owner:
            watcher.attach(Monitor({"role": "*"}, settle=0,
                                   on_add=lambda n, a: seen.append(("add", n)),
                                   on_del=lambda n, a: seen.append(("del", n))))
            names = [f"svc{i}" for i in range(5)]
            services = [owner.attach(Service(name, {"role": "worker"})) for name in names]
            eventually(lambda: sorted(n for op, n in seen) == names, timeout=15)
            doomed.kill()
            # The owner moves to the other frontend at once, but its services
            # meet their own old nodes (duplicate) until the dead frontend's
            # session expires; then every one is registered there.
            eventually(lambda: on(conn, other) and all(s.registered for s in services),
                       timeout=SESSION + 20)
            eventually(lambda: set(other.index()) == set(names), timeout=30)
            # The Monitor saw each service go and come back (or, if its find
            # fell after the new registration, nothing at all): never one lost.
            eventually(lambda: set(n for op, n in seen) == set(names)
                       and all(seen[::-1].index(("add", n)) < seen[::-1].index(("del", n))
                               for op, n in seen if op == "del"), timeout=10)
