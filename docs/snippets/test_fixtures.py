"""Tests of your own code against a real registry, with regmgr's pytest fixtures.

``tests/test_docs.py`` runs this file with pytest, as a user's project would.
"""
import gevent

from regmgr import TCP, Monitor, RegMgr, Service


def until(condition, timeout=10.0):
    with gevent.Timeout(timeout):
        while not condition():
            gevent.sleep(0.01)


def test_registers(registry_server):
    conn = TCP(registry_server.host, registry_server.new_port,
               registry_server.find_port, registry_server.event_port)
    with RegMgr(conn) as mgr:
        mgr.attach(Service("tcp!10.0.0.5!8080", {"proto": "http"}))
        until(lambda: "tcp!10.0.0.5!8080" in registry_server.index())


def test_survives_a_crash(registry_process):
    conn = TCP(registry_process.host, registry_process.new_port,
               registry_process.find_port, registry_process.event_port)
    with RegMgr(conn) as owner, RegMgr(conn) as watcher:
        deleted = []
        peers = watcher.attach(Monitor({"proto": "http"},
                                       on_del=lambda name, attrs: deleted.append(name)))
        owner.attach(Service("tcp!10.0.0.5!8080", {"proto": "http"}))
        until(lambda: peers.services)
        registry_process.kill()   # SIGKILL: the registry vanishes without a word
        until(lambda: peers.stale)
        registry_process.start()  # same ports, empty registry
        until(lambda: not peers.stale and "tcp!10.0.0.5!8080" in registry_process.index())
        assert deleted == []      # settle: the restart caused no false deletion
