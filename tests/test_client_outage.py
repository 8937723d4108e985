"""Outages of a registry process: SIGKILL, restart on the same ports, everything back."""
import time

from regmgr import Monitor, Service
from serverutil import eventually

COUNT = 100


def test_sigkill_and_restart_restores_100_services(manager_factory, registry_process):
    owner = manager_factory(registry_process)
    services = [owner.attach(Service(f"svc{i:03d}", {"n": i, "kind": "load"})) for i in range(COUNT)]
    watcher = manager_factory(registry_process)
    monitor = watcher.attach(Monitor({"kind": "load"}))
    eventually(lambda: len(monitor.services) == COUNT, timeout=30)

    registry_process.kill()
    eventually(lambda: not owner.connected and not any(svc.registered for svc in services))
    registry_process.start()
    ready = time.monotonic()
    eventually(lambda: len(registry_process.index()) == COUNT, timeout=30)
    restored = time.monotonic() - ready
    eventually(lambda: all(svc.registered for svc in services))
    eventually(lambda: monitor.services == registry_process.index(), timeout=10)
    print(f"\n{COUNT} services restored {restored:.3f} s after the registry accepted connections")
