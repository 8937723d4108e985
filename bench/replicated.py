"""A replicated registry: latency through a ZooKeeper-backed frontend vs memory,
and the failover after one of three frontends is SIGKILLed.

    python -m bench.replicated [-n 200] [-k 50] [--runs 3] [--session-timeout 5]

Needs Debian's ``zookeeper`` package and kazoo (``pip install -e '.[test]'``);
it starts a three-server ensemble on loopback (:mod:`regmgr.testing_zk`).

* **R1 register / find** (per store, memory and zookeeper): one ``regmgr
  serve`` child process; over the TCP gateway, ``n`` registrations one after
  the other (``TCP.open_new``, which returns once the registry listed it),
  then ``n`` finds of all of them.
* **R2 failover** (zookeeper): three frontends; one RegMgr registers ``k``
  services through ``TCP([A, B, C])`` (it is on A); a Monitor on B watches.
  A is SIGKILLed. Figures: seconds from the kill until B lists every one
  of the ``k`` again, registered through another frontend (goal: the
  session timeout + 1 s, none lost); and what the Monitor reported
  meanwhile (seconds until its first ``on_del``, how many dels and adds).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Optional, Sequence

import gevent

from regmgr import TCP, Monitor, RegMgr, Service
from regmgr.testing import RegistryProcess, find_over_tcp
from regmgr.testing_zk import Ensemble

from .harness import Row, table


def _tcp(*registries: RegistryProcess) -> TCP:
    return TCP([(r.host, r.new_port, r.find_port, r.event_port) for r in registries])


def r1_latency(store: str, url: Optional[str], n: int, runs: int) -> list[Row]:
    """Registration and find latency through one frontend of ``store``."""
    register: list[float] = []
    find: list[float] = []
    for run in range(runs):
        with RegistryProcess(store=url and f"{url}-r1-{store}-{run}") as registry:
            conn = _tcp(registry)
            held = []
            for i in range(n):
                started = time.perf_counter()
                held.append(conn.open_new(f"svc{i}", {"proto": "http", "i": str(i)}))
                register.append((time.perf_counter() - started) * 1000)
            for _ in range(n):
                started = time.perf_counter()
                found = conn.find({"proto": "http"})
                find.append((time.perf_counter() - started) * 1000)
            assert len(found) == n
            for registration in held:
                registration.close()
    return [Row("R1", f"register one (of {n})", store, register, "ms", runs=runs),
            Row("R1", f"find all {n}", store, find, "ms", runs=runs)]


def r2_failover(url: str, k: int, runs: int, session: float) -> list[Row]:
    """SIGKILL one of three frontends: how long until its clients' services are back?"""
    back: list[float] = []
    first_del: list[float] = []
    dels: list[float] = []
    adds: list[float] = []
    lost = 0
    for run in range(runs):
        root = f"{url}-r2-{run}"
        frontends = [RegistryProcess(store=root, session_timeout=session) for _ in range(3)]
        for frontend in frontends:
            frontend.start()
        a, b, c = frontends
        events: list[tuple[float, str]] = []
        try:
            with RegMgr(_tcp(b)) as watcher, RegMgr(_tcp(a, b, c)) as owner:
                watcher.attach(Monitor(
                    {"role": "*"}, settle=0,
                    on_add=lambda name, attrs: events.append((time.monotonic(), "add")),
                    on_del=lambda name, attrs: events.append((time.monotonic(), "del"))))
                services = [owner.attach(Service(f"w{i}", {"role": "worker"})) for i in range(k)]
                _until(lambda: len(find_over_tcp(b.host, b.find_port)) == k, 30)
                _until(lambda: len(events) >= k, 30)
                events.clear()
                killed = time.monotonic()
                a.kill()
                names = {f"w{i}" for i in range(k)}

                def whole() -> bool:
                    on_a = owner.connected and owner.connection.event_port == a.event_port
                    return (not on_a and all(s.registered for s in services)
                            and set(find_over_tcp(b.host, b.find_port)) == names)

                if not _until(whole, session + 30):
                    lost += 1
                    continue
                back.append(time.monotonic() - killed)
                gevent.sleep(0.5)  # the Monitor's last adds
                kinds = [kind for _, kind in events]
                dels.append(kinds.count("del"))
                adds.append(kinds.count("add"))
                first = [t for t, kind in events if kind == "del"]
                if first:
                    first_del.append(first[0] - killed)
        finally:
            for frontend in frontends:
                frontend.kill()
    goal = f"<= {session + 1:g} s"
    rows = [Row("R2", f"kill 1 of 3 frontends: all {k} listed again", "zookeeper", back, "s",
                goal=goal, met=bool(back) and max(back) <= session + 1 and not lost,
                note=f"session timeout {session:g} s; runs that never recovered: {lost}",
                runs=runs)]
    if first_del:
        rows.append(Row("R2", "Monitor on a survivor: first on_del", "zookeeper", first_del, "s",
                        runs=runs))
    rows.append(Row("R2", f"Monitor on a survivor: on_del calls (of {k})", "zookeeper",
                    dels or [0], "calls", runs=runs))
    rows.append(Row("R2", f"Monitor on a survivor: on_add calls (of {k})", "zookeeper",
                    adds or [0], "calls", runs=runs))
    return rows


def _until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.02)
    return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicated", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="registrations and finds (R1)")
    parser.add_argument("-k", type=int, default=50, help="services of the killed frontend (R2)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--session-timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    started = time.monotonic()
    rows: list[Row] = []
    with Ensemble() as ensemble:
        url = ensemble.url(f"/bench-{os.getpid()}")
        for store, store_url in (("memory", None), ("zookeeper", url)):
            print(f"R1 {store} ...", file=sys.stderr, flush=True)
            rows += r1_latency(store, store_url, args.n, args.runs)
        print("R2 ...", file=sys.stderr, flush=True)
        rows += r2_failover(url, args.k, args.runs, args.session_timeout)
    command = " ".join(["python -m bench.replicated", *(argv if argv is not None else sys.argv[1:])])
    print(table(rows, f"`{command}`: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                      f"load average {load:.2f} at start and {os.getloadavg()[0]:.2f} at the "
                      f"end, {time.monotonic() - started:.0f} s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
