"""Monitor across registry restarts: no false deletions, and a view that says when it is stale."""
import time

import pytest

from regmgr import Monitor, Service
from serverutil import eventually


class Recorder:
    """Monitor callbacks that record ``(kind, name, attrs)`` and state changes."""

    def __init__(self):
        self.log = []
        self.states = []

    def monitor(self, attrs=None, **kwargs):
        return Monitor(attrs, on_add=lambda n, a: self.log.append(("add", n, a)),
                       on_del=lambda n, a: self.log.append(("del", n, a, time.monotonic())),
                       on_mod=lambda n, a: self.log.append(("mod", n, a)),
                       on_stale=self.states.append, **kwargs)

    def kinds(self, kind):
        return [entry for entry in self.log if entry[0] == kind]


@pytest.fixture
def recorder():
    return Recorder()


def settled(monitor, registry):
    """The view is fresh and equals the registry's index."""
    return not monitor.stale and monitor.services == registry.index()


def test_five_restarts_without_a_false_deletion(manager_factory, registry_process, recorder):
    owner = manager_factory(registry_process)
    for i in range(20):
        owner.attach(Service(f"svc{i:02d}", {"n": i}))
    watcher = manager_factory(registry_process)
    monitor = watcher.attach(recorder.monitor())
    eventually(lambda: len(monitor.services) == 20, timeout=20)
    for _ in range(5):
        registry_process.restart()
        eventually(lambda: len(registry_process.index()) == 20, timeout=20)
        eventually(lambda: settled(monitor, registry_process), timeout=10)
    assert recorder.kinds("del") == [] and recorder.kinds("mod") == []
    assert len(recorder.kinds("add")) == 20


def test_outage_diff_after_a_restart(manager_factory, registry_process, recorder):
    owner = manager_factory(registry_process)
    keep = owner.attach(Service("keep", {"v": 1}))
    owner.attach(Service("same", {"v": 1}))
    leaving = manager_factory(registry_process)
    leaving.attach(Service("gone", {"v": 1}))
    watcher = manager_factory(registry_process)
    reconnects = []
    watcher.add_listener(lambda up: up and reconnects.append(time.monotonic()))
    monitor = watcher.attach(recorder.monitor(settle=1.0))
    eventually(lambda: len(monitor.services) == 3, timeout=20)
    del recorder.log[:]

    registry_process.kill()
    eventually(lambda: monitor.stale)
    leaving.close()  # gone for good
    keep.update({"v": 2})  # changed during the outage
    registry_process.start()
    eventually(lambda: recorder.kinds("del"), timeout=10)
    eventually(lambda: settled(monitor, registry_process), timeout=10)

    assert [entry[:3] for entry in recorder.log] in (
        [("mod", "keep", {"v": "2"}), ("del", "gone", {"v": "1"})],
        [("del", "gone", {"v": "1"}), ("mod", "keep", {"v": "2"})])
    deleted_at = recorder.kinds("del")[0][3]
    assert 0.9 <= deleted_at - reconnects[-1] <= 1.0 + 2.0  # settle, plus a find's slack
    assert monitor.services == {"keep": {"v": "2"}, "same": {"v": "1"}}


def test_stale_follows_the_connection(manager_factory, registry_process, recorder):
    watcher = manager_factory(registry_process)
    monitor = recorder.monitor()
    assert monitor.stale
    watcher.attach(monitor)
    eventually(lambda: not monitor.stale)
    assert recorder.states == [False]
    registry_process.kill()
    eventually(lambda: monitor.stale)
    assert recorder.states == [False, True]
    registry_process.start()
    eventually(lambda: not monitor.stale, timeout=10)
    assert recorder.states == [False, True, False]
    watcher.detach(monitor)
    assert monitor.stale and recorder.states[-1] is True


@pytest.mark.parametrize("settle", [0, 0.6])
def test_held_deletions_after_a_restart_of_the_monitor(manager, recorder, settle):
    svc = manager.attach(Service("svc"))
    monitor = manager.attach(recorder.monitor(settle=settle))
    eventually(lambda: "svc" in monitor.services)
    manager.detach(monitor)
    manager.detach(svc)
    manager.attach(monitor)
    started = time.monotonic()
    eventually(lambda: not monitor.stale)
    if settle:
        assert "svc" in monitor.services and recorder.kinds("del") == []
    eventually(lambda: recorder.kinds("del"))
    assert settle <= recorder.kinds("del")[0][3] - started <= settle + 1.0
    assert monitor.services == {}
