"""The public API's one vocabulary (issue 15 item 5): names, keyword-only
callbacks, read-only filters and listener checks."""
import inspect

import pytest

from regmgr import TCP, Lookup, Monitor, RegMgr
from regmgr.cli import build_parser
from regmgr.server import EmbeddedRegistry
from regmgr.testing import RegistryProcess, RegistryServer
from serverutil import eventually

PORTS = ("new_port", "find_port", "event_port")


def test_gateway_ports_have_one_name_everywhere():
    conn = TCP("h", new_port=1, find_port=2, event_port=3)
    assert (conn.new_port, conn.find_port, conn.event_port) == (1, 2, 3)
    assert repr(conn) == "TCP('h', new_port=1, find_port=2, event_port=3)"
    for api in (TCP, EmbeddedRegistry, RegistryServer, RegistryProcess):
        params = inspect.signature(api).parameters
        assert all(port in params for port in PORTS), api
    args = build_parser().parse_args(
        ["find", "--new-port", "1", "--find-port", "2", "--event-port", "3"])
    assert (args.new_port, args.find_port, args.event_port) == (1, 2, 3)


def test_old_port_names_are_gone():
    with pytest.raises(TypeError):
        TCP("h", port_new=1)


def test_callbacks_are_keyword_only():
    with pytest.raises(TypeError):
        Monitor({}, print)
    with pytest.raises(TypeError):
        Lookup({}, print)
    with pytest.raises(TypeError):
        Monitor(on_state=print)
    monitor = Monitor(on_add=print, on_del=print, on_mod=print, on_stale=print, settle=0)
    assert monitor.on_stale is print and monitor.settle == 0
    assert Lookup(callback=print).callback is print


@pytest.mark.parametrize("task", [Monitor, Lookup])
def test_filters_are_read_only_copies(task):
    made = task({"proto": "http", "load": 1})
    assert made.attrs == {"proto": "http", "load": "1"}
    made.attrs["proto"] = "ssh"
    assert made.attrs == {"proto": "http", "load": "1"}
    with pytest.raises(AttributeError):
        made.attrs = {}


def test_monitor_on_stale_reads_stale(manager_factory, registry_server):
    stale = []
    mgr = manager_factory(registry_server)
    monitor = mgr.attach(Monitor(on_stale=stale.append, settle=0))
    eventually(lambda: stale == [False] and not monitor.stale)
    registry_server.stop()
    eventually(lambda: stale == [False, True] and monitor.stale)


@pytest.mark.parametrize("thing", [None, 1, "print", [print]])
def test_add_listener_refuses_non_callables(thing):
    mgr = RegMgr(TCP("127.0.0.1", new_port=1, find_port=1, event_port=1))
    try:
        with pytest.raises(TypeError, match="callable"):
            mgr.add_listener(thing)
    finally:
        mgr.close()


def test_remove_listener_stops_the_calls(manager_factory, registry_server):
    kept, removed = [], []
    mgr = manager_factory(registry_server)
    mgr.add_listener(kept.append)
    mgr.add_listener(removed.append)
    assert mgr.wait_connected(5)
    eventually(lambda: kept == [True] and removed == [True])
    mgr.remove_listener(removed.append)
    registry_server.restart()
    eventually(lambda: kept == [True, False, True])
    assert removed == [True]
    with pytest.raises(ValueError):
        mgr.remove_listener(removed.append)
