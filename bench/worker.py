"""A client role of the benchmarks, run as its own process: ``python -m bench.worker SPEC``.

``SPEC`` is JSON naming the transport and the registry's ports. The worker
holds one :class:`~regmgr.RegMgr` and obeys one JSON request per stdin line,
answering each with one JSON line on stdout (``{"error": ...}`` if it
failed). Times are ``time.monotonic()``, which on Linux is one clock for
every process, so the parent can subtract a time taken here from one taken
in another worker.
"""
from __future__ import annotations

import gc
import json
import logging
import random
import resource
import sys
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional

import gevent
from gevent.event import Event
from gevent.fileobject import FileObjectPosix

from regmgr import TCP, Monitor, RegMgr, Service, Styx
from regmgr.connections import Connection, EventStream, Registration, Services

Reply = dict[str, Any]


def connection(spec: Mapping[str, Any]) -> Connection:
    """The transport ``spec`` names."""
    if spec["transport"] == "tcp":
        return TCP(spec["host"], new_port=spec["new"], find_port=spec["find"],
                   event_port=spec["event"])
    if spec["transport"] == "styx":
        return Styx(spec["host"], spec["styx"])
    raise ValueError(f"unknown transport {spec['transport']!r}")


def rss_bytes() -> int:
    """This process's resident set now (Linux ``/proc``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def cpu_seconds() -> float:
    """User plus system CPU time used by this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wait(condition: Callable[[], bool], timeout: float, poll: float = 0.005) -> bool:
    """Poll ``condition`` until true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(poll)
    return True


class Listing:
    """``connection`` for the worker's RegMgr, telling ``on_find`` how many each find listed.

    B1 needs to know when the Monitor's finds list every service again,
    whatever the Monitor then does about the ones they missed.
    """

    def __init__(self, connection: Connection, on_find: Callable[[int], None]) -> None:
        self._connection = connection
        self._on_find = on_find

    def open_event(self) -> EventStream:
        return self._connection.open_event()

    def open_new(self, name: str, attrs: Optional[Mapping[str, str]] = None) -> Registration:
        return self._connection.open_new(name, attrs)

    def find(self, attrs: Optional[Mapping[str, str]] = None) -> Services:
        found = self._connection.find(attrs)
        self._on_find(len(found))
        return found

    def find_text(self, attrs: Optional[Mapping[str, str]] = None) -> str:
        """What the Monitor calls: the benchmark's names and values hold no newline."""
        assert isinstance(self._connection, (TCP, Styx))
        text = self._connection.find_text(attrs)
        self._on_find(text.count("\n"))
        return text


class Worker:
    """The state of one client process and its requests (``op_*`` methods)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.connection = connection(spec)
        self.mgr = RegMgr(Listing(self.connection, self._found))
        self.mgr.add_listener(self._connected)
        self.services: list[Service] = []
        self.monitor: Optional[Monitor] = None
        self.count = 0  # services in the monitor's view
        self.mods: list[tuple[str, str, float]] = []  # (name, value of `key`, time)
        self.key = ""
        self.seq = 0  # the last sequence number `churn` sent
        self.changed = Event()
        # B1: after `arm`, when did the view come back whole after a loss?
        self.want = -1
        self.lost = False
        self.listed = -1  # services in the last find
        self.whole_at: Optional[float] = None

    # -- registering ---------------------------------------------------------

    def op_register(self, prefix: str, n: int, attrs: dict[str, str], timeout: float,
                    shards: int = 0) -> Reply:
        """Attach ``n`` more services and wait until all of them are registered.

        With ``shards``, service *i* also gets ``shard`` = *i* mod ``shards``
        and ``tenth`` = *i* mod 10
        (something for a selective find to select). Returns how long it took,
        or, after ``timeout`` seconds, how many got registered.
        """
        start = time.monotonic()
        first = len(self.services)
        for i in range(first, first + n):
            mine = {**attrs, "shard": str(i % shards), "tenth": str(i % 10)} if shards else attrs
            self.services.append(self.mgr.attach(Service(f"{prefix}{i}", mine)))
        complete = self._wait_registered(first, timeout)
        return {"seconds": time.monotonic() - start, "complete": complete,
                "total": len(self.services),
                "registered": sum(service.registered for service in self.services)}

    def _wait_registered(self, first: int, timeout: float) -> bool:
        pending = iter(self.services[first:])
        current: list[Optional[Service]] = [next(pending, None)]

        def done() -> bool:
            while current[0] is not None and current[0].registered:
                current[0] = next(pending, None)
            return current[0] is None

        return _wait(done, timeout, poll=0.02)

    def op_registered(self, timeout: float) -> Reply:
        """Wait until every service is registered (again)."""
        if not self._wait_registered(0, timeout):
            raise TimeoutError(f"not all {len(self.services)} registered after {timeout} s")
        return {"t": time.monotonic()}

    def op_drop_unregistered(self) -> Reply:
        """Detach every service that is not registered now; how many remain."""
        for service in [s for s in self.services if not s.registered]:
            self.mgr.detach(service)
            self.services.remove(service)
        return {"total": len(self.services)}

    def op_update(self, index: int, attrs: dict[str, str]) -> Reply:
        """One ``Service.update``; returns the time it was called."""
        t = time.monotonic()
        self.services[index].update(attrs)
        return {"t": t}

    def op_churn(self, rate: float, seconds: float, key: str) -> Reply:
        """``rate`` updates a second for ``seconds`` over random services.

        Each sets ``key`` to the next number of a sequence that goes on
        across calls (so every update is a change); returns ``[name, seq,
        time sent]`` per update and the CPU this process used meanwhile.
        """
        sent: list[tuple[str, str, float]] = []
        cpu = cpu_seconds()
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            service = random.choice(self.services)
            self.seq += 1
            t = time.monotonic()
            service.update({key: str(self.seq)})
            sent.append((service.name, str(self.seq), t))
        wall = time.monotonic() - start
        return {"sent": sent, "cpu": cpu_seconds() - cpu, "wall": wall}

    # -- watching ------------------------------------------------------------

    def op_monitor(self, attrs: dict[str, str], key: str, settle: float) -> Reply:
        """Attach a Monitor that counts its view and records ``key`` of each change."""
        self.key = key
        self.monitor = self.mgr.attach(Monitor(
            attrs, on_add=self._added, on_del=self._deleted, on_mod=self._modified,
            settle=settle))
        return {}

    def _added(self, name: str, attrs: dict[str, str]) -> None:
        self.count += 1
        self._check_whole()

    def _deleted(self, name: str, attrs: dict[str, str]) -> None:
        self.count -= 1

    def _modified(self, name: str, attrs: dict[str, str]) -> None:
        self.mods.append((name, attrs.get(self.key, ""), time.monotonic()))
        self.changed.set()

    def _connected(self, connected: bool) -> None:
        if not connected:
            self.lost = True
            self.listed = -1

    def _found(self, listed: int) -> None:
        self.listed = listed
        self._check_whole()

    def _check_whole(self) -> None:
        """Whole: a find since the loss listed them all, and the view holds them all."""
        if self.lost and self.whole_at is None and self.listed == self.count == self.want:
            self.whole_at = time.monotonic()

    def op_view(self, count: int, timeout: float) -> Reply:
        """Wait until the view holds ``count`` services and is not stale."""
        if not _wait(lambda: self.count == count and self.monitor is not None
                     and not self.monitor.stale, timeout):
            raise TimeoutError(f"view of {self.count}, not {count}, after {timeout} s")
        return {"t": time.monotonic()}

    def op_arm(self, count: int) -> Reply:
        """Start watching for the view to be lost, then whole (``count``) again."""
        self.want = count
        self.lost = False
        self.whole_at = None
        return {}

    def op_whole(self, timeout: float) -> Reply:
        """When the view came back whole after the loss that followed ``arm``."""
        if not _wait(lambda: self.whole_at is not None, timeout):
            raise TimeoutError(f"view of {self.count}, not {self.want}, {timeout} s after a loss")
        return {"t": self.whole_at}

    def op_wait_mod(self, name: str, value: str, timeout: float) -> Reply:
        """Wait for ``on_mod`` of ``name`` with ``key`` = ``value``; its time."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for mod_name, mod_value, t in self.mods[seen:]:
                if mod_name == name and mod_value == value:
                    return {"t": t}
            seen = len(self.mods)
            self.changed.clear()
            if not self.changed.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"no on_mod {name} {value} in {timeout} s")

    def op_take_mods(self) -> Reply:
        """Every change recorded since the last call, and forget them."""
        mods, self.mods = self.mods, []
        return {"mods": mods}

    # -- finding and measuring ----------------------------------------------

    def op_finds(self, attrs: dict[str, str], seconds: float, expect: int) -> Reply:
        """Run finds back to back for ``seconds``; count them, check each one's size.

        Also the CPU this process used meanwhile, which load distorts less
        than the rate does.
        """
        count = 0
        cpu = cpu_seconds()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            found = self.connection.find(attrs)
            if len(found) != expect:
                raise RuntimeError(f"find {attrs} listed {len(found)}, not {expect}")
            count += 1
        return {"finds": count, "seconds": time.monotonic() - start, "cpu": cpu_seconds() - cpu}

    def op_probe(self, attrs: dict[str, str], seconds: float, interval: float) -> Reply:
        """A find every ``interval`` for ``seconds``: the latency of each, in seconds."""
        latencies: list[float] = []
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            t = time.monotonic()
            self.connection.find(attrs)
            latencies.append(time.monotonic() - t)
            gevent.sleep(max(0.0, interval - (time.monotonic() - t)))
        return {"latencies": latencies}

    def op_requests(self) -> Reply:
        """Styx T-messages sent so far by this process (None over TCP)."""
        sent = self.connection.requests_sent if isinstance(self.connection, Styx) else None
        return {"sent": sent}

    def op_usage(self) -> Reply:
        """Resident memory (after a collection) and CPU time used so far."""
        gc.collect()
        return {"rss": rss_bytes(), "cpu": cpu_seconds()}


def main() -> None:
    spec = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    worker = Worker(spec)
    if not worker.mgr.wait_connected(timeout=30):
        raise SystemExit("worker: registry not reachable")
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in FileObjectPosix(sys.stdin.fileno(), "rb"):
        request = json.loads(line)
        op = getattr(worker, "op_" + request.pop("op"))
        try:
            reply = op(**request)
        except Exception as err:
            reply = {"error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
