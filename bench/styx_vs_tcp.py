"""Register N services through one RegMgr over TCP, then over Styx: time and sockets.

    python bench/styx_vs_tcp.py [-n 1000] [--runs 3]

For each transport, a fresh ``regmgr serve`` child process is the
registry; this process attaches N :class:`~regmgr.Service` tasks to one
connected RegMgr and measures:

* visible: seconds from the first attach until a find (through the
  registry's own find port, no client library) lists all N;
* registered: seconds until every Service says it is registered (the
  client knows the registry accepted it);
* sockets: TCP sockets this process holds once all are registered, and
  the most seen during the run (sampled every 10 ms), from ``/proc/self/fd``.

Linux only (``/proc``).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import gevent

from regmgr import TCP, RegMgr, Service, Styx
from regmgr.connections import Connection
from regmgr.testing import RegistryProcess, find_over_tcp, open_sockets

TRANSPORTS: dict[str, Callable[[RegistryProcess], Connection]] = {
    "tcp": lambda reg: TCP(reg.host, new_port=reg.new_port, find_port=reg.find_port,
                           event_port=reg.event_port),
    "styx": lambda reg: Styx(reg.host, reg.styx_port),
}


def run(transport: str, n: int) -> dict[str, float]:
    with RegistryProcess() as registry:
        baseline = open_sockets()
        peak = 0

        def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, open_sockets() - baseline)
                gevent.sleep(0.01)

        sampler = gevent.spawn(sample)
        with RegMgr(TRANSPORTS[transport](registry)) as mgr:
            if not mgr.wait_connected(10):
                raise RuntimeError(f"{transport}: not connected")
            start = time.monotonic()
            services = [mgr.attach(Service(f"bench!{i}", {"kind": "bench", "n": str(i)}))
                        for i in range(n)]
            while len(find_over_tcp(registry.host, registry.find_port, "kind bench")) < n:
                gevent.sleep(0.01)
            visible = time.monotonic() - start
            while not all(svc.registered for svc in services):
                gevent.sleep(0.01)
            registered = time.monotonic() - start
            gevent.sleep(0.05)  # let transient find sockets close
            held = open_sockets() - baseline
        sampler.kill()
    return {"visible": visible, "registered": registered, "sockets": held, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="services (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs per transport (default %(default)s)")
    args = parser.parse_args()
    print(f"{args.n} services through one RegMgr, median of {args.runs} runs\n")
    print("| transport | visible in a find (s) | all registered (s) | sockets held | peak sockets |")
    print("|---|---|---|---|---|")
    for transport in TRANSPORTS:
        results = [run(transport, args.n) for _ in range(args.runs)]
        med = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(f"| {transport} | {med['visible']:.3f} | {med['registered']:.3f} "
              f"| {med['sockets']:.0f} | {med['peak']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
