"""Outages of a registry process: SIGKILL, restart on the same ports, everything back."""
import time

from regmgr import Monitor, Service
from serverutil import eventually

COUNT = 100


def test_sigkill_and_restart_restores_100_services(manager_factory, registry_process):
    owner = manager_factory(registry_process)
    services = [owner.attach(Service(f"svc{i:03d}", {"n": i, "kind": "load"})) for i in range(COUNT)]
    watcher = manager_factory(registry_process)
    monitor = watcher.attach(Monitor({"kind": "load"}, on_del=lambda *args: deleted.append(args)))
    deleted = []
    eventually(lambda: len(monitor.services) == COUNT, timeout=30)
    expected = registry_process.index()

    registry_process.kill()
    eventually(lambda: not owner.connected and not any(svc.registered for svc in services)
               and monitor.stale)  # two managers, two sessions: each notices on its own
    assert monitor.services == expected
    launched = time.monotonic()
    registry_process.start()
    ready = time.monotonic()
    eventually(lambda: len(registry_process.index()) == COUNT, timeout=30)
    restored = time.monotonic() - ready
    eventually(lambda: not monitor.stale and monitor.services == expected, timeout=30)
    fresh = time.monotonic() - ready
    assert registry_process.index() == expected
    eventually(lambda: all(svc.registered for svc in services))  # the registry lists a
    assert deleted == []  # service a moment before its owner reads the acknowledgement
    print(f"\n{COUNT} services: registered again {restored:.3f} s, monitor complete and "
          f"not stale {fresh:.3f} s after the restarted registry accepted connections "
          f"({ready - launched:.3f} s after its launch)")
