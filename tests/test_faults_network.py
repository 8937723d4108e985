"""Real network faults (issue 10): a hung registry, a partition, a silent restart.

The registry runs in its own network namespace behind a veth pair; DROP
rules inside that namespace cut it off (the root namespace's rules are
never touched). The services' owner is this process, a Monitor watches
from another process. Short probe and keepalive settings keep each
scenario to seconds; every bound asserted is a generous liveness bound.
"""
import os
import sys
import time

import gevent
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.faultnet import Namespace, Scene, unavailable  # noqa: E402
from serverutil import eventually  # noqa: E402

pytestmark = pytest.mark.skipif(bool(reason := unavailable()), reason=str(reason))

COUNT = 10
PROBES = {"probe_interval": 0.5, "probe_timeout": 1.5}  # a dead registry noticed in ~2 s
SERVER_KEEPALIVE = "3"  # seconds: the registry drops a vanished client's entries
BOUND = 20.0  # seconds: the generous bound on every recovery below


@pytest.fixture(params=["tcp", "styx"])
def scene(request):
    with Namespace() as net:
        scene = Scene(net, request.param, COUNT, PROBES, ("--keepalive", SERVER_KEEPALIVE))
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
