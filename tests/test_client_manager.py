"""RegMgr: supervision, attach/detach, listeners, close and garbage collection."""
import gc
import itertools
import weakref

import gevent
import pytest

from regmgr import AttachError, Backoff, RegMgr, RegmgrError, Service
from serverutil import eventually


class Recorder:
    """A duck-typed task that records the calls it gets."""

    def __init__(self):
        self.manager = None
        self.calls = []

    def start(self):
        self.calls.append("start")

    def stop(self):
        self.calls.append("stop")

    def refresh(self):
        self.calls.append("refresh")


def test_backoff_grows_to_the_cap_and_starts_fast():
    delays = Backoff(initial=0.05, factor=2, maximum=0.3, jitter=False).delays()
    assert list(itertools.islice(delays, 5)) == [0.05, 0.1, 0.2, 0.3, 0.3]
    for n, delay in enumerate(itertools.islice(Backoff(maximum=1).delays(), 50)):
        nominal = min(0.05 * 1.25 ** n, 1)
        assert nominal / 2 <= delay <= nominal


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"initial": 2, "maximum": 1}, {"factor": 0.5}])
def test_backoff_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_tasks_follow_the_connection(manager_factory, registry_server):
    mgr = manager_factory(registry_server)
    states = []
    mgr.add_listener(states.append)
    task = mgr.attach(Recorder())
    assert task.manager is mgr and mgr.tasks == [task]
    assert mgr.wait_connected(5) and mgr.connected
    eventually(lambda: task.calls == ["start"])
    mgr.attach(Service("svc"))
    eventually(lambda: "refresh" in task.calls)
    registry_server.stop()
    eventually(lambda: not mgr.connected)
    assert task.calls[-1] == "stop"
    registry_server.start()  # same ports
    assert mgr.wait_connected(5)
    eventually(lambda: task.calls.count("start") == 2)
    assert states[:3] == [True, False, True]


class SharingRecorder(Recorder):
    """A task whose refresh is one callable shared with others: called once per event."""

    def __init__(self, shared):
        super().__init__()
        self.shared_refresh = shared

    def refresh(self):
        raise AssertionError("a task with shared_refresh is not refreshed one by one")


def test_a_shared_refresh_runs_once_per_event_while_a_task_uses_it(manager):
    calls = []

    def shared():
        calls.append(1)

    tasks = [manager.attach(SharingRecorder(shared)) for _ in range(3)]
    own = manager.attach(Recorder())
    probe = manager.attach(Service("shared-refresh"))
    eventually(lambda: own.calls.count("refresh") >= 1)
    manager.detach(probe)
    eventually(lambda: own.calls.count("refresh") >= 2)  # the removal's event
    assert len(calls) == own.calls.count("refresh")  # once per event, not once per task
    for task in tasks:
        manager.detach(task)
    before = len(calls)
    manager.attach(Service("shared-refresh-2"))
    eventually(lambda: own.calls.count("refresh") >= 3)
    assert len(calls) == before and manager.tasks[0] is own


def test_registered_services_share_one_refresh(manager):
    services = [manager.attach(Service(f"share-{i}")) for i in range(3)]
    assert len({service.shared_refresh for service in services}) == 1
    assert Service("detached").shared_refresh is None


def test_attach_while_connected_starts_at_once(manager):
    task = manager.attach(Recorder())
    assert task.calls == ["start"]
    manager.detach(task)
    assert task.calls == ["start", "stop"] and task.manager is None and manager.tasks == []


def test_attach_and_detach_errors(manager_factory, registry_server):
    one, two = manager_factory(registry_server), manager_factory(registry_server)
    task = one.attach(Recorder())
    with pytest.raises(AttachError, match="already attached"):
        one.attach(task)
    with pytest.raises(AttachError, match="already attached"):
        two.attach(task)
    with pytest.raises(AttachError, match="not attached to this manager"):
        two.detach(task)
    one.detach(task)
    with pytest.raises(AttachError, match="not attached to this manager"):
        one.detach(task)
    two.attach(task)
    assert task.manager is two


def test_no_registry_means_not_connected(manager_factory, registry_server):
    registry_server.stop()
    mgr = manager_factory(registry_server)
    assert not mgr.wait_connected(0.3)
    with pytest.raises(TimeoutError):
        mgr.lookup(timeout=0.2)
    assert mgr.tasks == []  # the lookup did not stay behind


def test_lookup_waits_for_the_connection(manager_factory, registry_server):
    registry_server.stop()
    mgr = manager_factory(registry_server)
    lookup = gevent.spawn(mgr.lookup, {"proto": "*"}, 5)
    eventually(lambda: len(mgr.tasks) == 1)  # the lookup is attached and waits
    assert not mgr.connected
    registry_server.start()
    assert lookup.get(timeout=10) == {}


def test_close_stops_and_detaches_everything(manager_factory, registry_server):
    with manager_factory(registry_server) as mgr:
        svc = mgr.attach(Service("svc", {"a": 1}))
        task = mgr.attach(Recorder())
        eventually(lambda: svc.registered)
    assert svc.manager is None and task.manager is None and not svc.registered
    assert task.calls[-1] == "stop" and not mgr.connected
    eventually(lambda: registry_server.index() == {})
    with pytest.raises(RegmgrError):
        mgr.attach(Recorder())
    mgr.close()  # idempotent


def test_dropping_the_last_reference_releases_everything(connection_factory, registry_server):
    mgr = RegMgr(connection_factory(registry_server))
    svc = mgr.attach(Service("svc"))
    eventually(lambda: svc.registered)
    ref = weakref.ref(mgr)
    del mgr
    gc.collect()
    assert ref() is None
    assert svc.manager is None and not svc.registered
    eventually(lambda: registry_server.index() == {})
    eventually(lambda: registry_server.registry._listeners == [])  # event stream closed


def test_failing_tasks_and_listeners_are_logged(manager, registry_server, caplog):
    class Broken(Recorder):
        def start(self):
            raise RuntimeError("task bug")

    def listener(connected):
        raise RuntimeError("listener bug")

    manager.add_listener(listener)
    broken = manager.attach(Broken())
    good = manager.attach(Recorder())
    assert good.calls == ["start"] and broken.manager is manager
    assert "task bug" in caplog.text
    registry_server.restart()
    eventually(lambda: good.calls == ["start", "stop", "start"])
    assert "listener bug" in caplog.text
    manager.remove_listener(listener)
    assert manager.lookup(timeout=5) == {}
