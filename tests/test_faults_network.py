"""Real network faults (issue 10): a hung registry, a partition, a silent restart.

The registry runs in its own network namespace behind a veth pair; DROP
rules inside that namespace cut it off (the root namespace's rules are
never touched). The services' owner is this process, a Monitor watches
from another process. Short probe and keepalive settings keep each
scenario to seconds; every bound asserted is a generous liveness bound.
"""
import os
import subprocess
import sys
import time

import gevent
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.faultnet import (Namespace, NamespacedRegistry, Watcher,  # noqa: E402
                            connection_spec, unavailable)
from bench.faultwatch import connection  # noqa: E402
from regmgr import RegMgr, Service  # noqa: E402
from serverutil import eventually  # noqa: E402

pytestmark = pytest.mark.skipif(bool(reason := unavailable()), reason=str(reason))

COUNT = 10
PROBES = {"probe_interval": 0.5, "probe_timeout": 1.5}  # a dead registry noticed in ~2 s
SERVER_KEEPALIVE = "3"  # seconds: the registry drops a vanished client's entries
BOUND = 20.0  # seconds: the generous bound on every recovery below


def _server_has_keepalive() -> bool:
    help_text = subprocess.run([sys.executable, "-m", "regmgr", "serve", "--help"],
                               capture_output=True, text=True, timeout=30).stdout
    return "--keepalive" in help_text


class Scene:
    """The registry in a namespace, COUNT services owned here, a Monitor in another process."""

    def __init__(self, net, transport):
        extra = ("--keepalive", SERVER_KEEPALIVE) if _server_has_keepalive() else ()
        self.net = net
        self.registry = NamespacedRegistry(net, extra)
        self.registry.start()
        spec = connection_spec(self.registry, transport, **PROBES)
        self.owner = RegMgr(connection(spec))
        self.services = [self.owner.attach(Service(f"svc{i}", {"kind": "fault", "n": i}))
                         for i in range(COUNT)]
        self.watcher = Watcher(spec, {"kind": "fault"})

    def expected(self):
        return {svc.name: svc.attrs for svc in self.services}

    def whole(self):
        """Every service listed as it is here, registered, and the Monitor's view equal."""
        try:
            index = self.registry.index()
        except OSError:
            return False
        return (index == self.expected() and self.watcher.view == index
                and not self.watcher.stale and all(svc.registered for svc in self.services))

    def lost(self):
        """The owner and the watcher both noticed that the registry is gone."""
        return not self.owner.connected and self.watcher.stale

    def close(self):
        self.watcher.close()
        self.owner.close()
        self.registry.kill()


@pytest.fixture(params=["tcp", "styx"])
def scene(request):
    with Namespace() as net:
        scene = Scene(net, request.param)
        try:
            eventually(scene.whole, timeout=BOUND)
            yield scene
        finally:
            scene.close()


def _update_returns_at_once(svc, attrs):
    started = time.monotonic()
    svc.update(attrs)
    assert time.monotonic() - started < 1.0  # an update never waits for the registry


def test_hung_registry_is_noticed_and_everything_comes_back(scene):
    scene.registry.pause()
    try:
        eventually(scene.lost, timeout=BOUND)
        _update_returns_at_once(scene.services[0], {"load": "9"})
    finally:
        scene.registry.resume()
    eventually(scene.whole, timeout=BOUND)
    assert scene.registry.index()["svc0"]["load"] == "9"
    assert scene.watcher.deleted == []


def test_silent_restart_behind_a_blackhole(scene):
    scene.net.block()
    try:
        scene.registry.kill()
        scene.registry.start()  # empty, on the same ports, still cut off
        gevent.sleep(3)  # the length of the fault, not a wait for a condition
    finally:
        scene.net.unblock()
    eventually(scene.whole, timeout=BOUND)
    assert scene.watcher.deleted == []


def test_partition_with_an_update_heals(scene):
    if not _server_has_keepalive():
        pytest.skip("regmgr serve has no --keepalive yet: it would keep the entries of "
                    "connections the partition killed until they close")
    scene.net.block()
    try:
        eventually(scene.lost, timeout=BOUND)
        _update_returns_at_once(scene.services[1], {"load": "7"})
        gevent.sleep(4)  # the partition outlasts the registry's keepalive
    finally:
        scene.net.unblock()
    eventually(scene.whole, timeout=BOUND)
    assert scene.registry.index()["svc1"]["load"] == "7"
    assert scene.watcher.deleted == []
