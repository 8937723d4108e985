"""``python -m bench.faults``: issue 10's fault table, measured with real faults.

Each scenario runs ``regmgr serve`` (default settings) in its own network
namespace (:mod:`bench.faultnet`), 20 services owned by this process and a
Monitor in another process, both with the default probe settings (3 s /
5 s) and backoff. "Whole" means: every service listed by the registry with
its current attributes, every Service ``registered``, and the Monitor's
view equal to the registry's index and not stale. Times are seconds.

``--long`` adds the 120 s partition and silent restart and the 10-minute
outage; ``--quick`` keeps one short sample of each. Root and Linux only.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Container, Sequence
from typing import Optional

import gevent
import gevent.socket

from regmgr import TCP, RegMgr, Service, Styx
from regmgr.errors import RegistryError
from regmgr.testing import RegistryProcess, find_over_tcp

from .faultnet import Namespace, Scene, unavailable

COUNT = 20
TRANSPORTS = ("tcp", "styx")
Row = tuple[str, str, str, str]  # fault, transport, measured, goal


def _until(condition: Callable[[], bool], timeout: float, poll: float = 0.01) -> Optional[float]:
    """Seconds until ``condition()`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            return None
        gevent.sleep(poll)
    return time.monotonic() - start


def _s(value: Optional[float]) -> str:
    return "never" if value is None else f"{value:.2f}"


def _scene(transport: str) -> tuple[Namespace, Scene]:
    net = Namespace().__enter__()
    try:
        scene = Scene(net, transport, COUNT)
        if _until(scene.whole, 60) is None:
            raise RuntimeError("the scene never became whole")
    except BaseException:
        net.close()
        raise
    return net, scene


def partition(transport: str, seconds: float) -> Row:
    net, scene = _scene(transport)
    try:
        net.block()
        gevent.sleep(seconds / 2)
        scene.services[0].update({"load": "7"})
        gevent.sleep(seconds / 2)
        net.unblock()
        back = _until(scene.whole, 120)
        assert scene.watcher is not None
        return (f"partition {seconds:g} s, with an update", transport,
                f"whole {_s(back)} s after the heal; {len(scene.watcher.deleted)} on_del",
                "whole within 10 s; 0 on_del")
    finally:
        scene.close()
        net.close()


def hung(transport: str, seconds: float) -> Row:
    net, scene = _scene(transport)
    try:
        scene.registry.pause()
        noticed = _until(scene.lost, seconds)
        started = time.monotonic()
        scene.services[0].update({"load": "9"})
        update = time.monotonic() - started
        gevent.sleep(max(0.0, seconds - (time.monotonic() - started) - (noticed or seconds)))
        scene.registry.resume()
        back = _until(scene.whole, 120)
        assert scene.watcher is not None
        return (f"hung registry {seconds:g} s", transport,
                f"noticed {_s(noticed)} s; whole {_s(back)} s after SIGCONT; update() took "
                f"{update * 1000:.1f} ms; {len(scene.watcher.deleted)} on_del",
                "noticed within 10 s; back within 2 s; 0 lost")
    finally:
        scene.close()
        net.close()


def silent_restart(transport: str, seconds: float) -> Row:
    net, scene = _scene(transport)
    try:
        net.block()
        started = time.monotonic()
        scene.registry.kill()
        scene.registry.start()  # empty, same ports, still cut off
        gevent.sleep(max(0.0, seconds - (time.monotonic() - started)))
        net.unblock()
        back = _until(scene.whole, 120)
        assert scene.watcher is not None
        return (f"silent restart {seconds:g} s", transport,
                f"whole {_s(back)} s after the unblock; {len(scene.watcher.deleted)} on_del",
                "back within 2 s after unblock")
    finally:
        scene.close()
        net.close()


def _connection(reg: RegistryProcess, transport: str) -> TCP | Styx:
    if transport == "tcp":
        return TCP(reg.host, reg.new_port, reg.find_port, reg.event_port)
    return Styx(reg.host, reg.styx_port)


def restore(transport: str, outages: Sequence[float]) -> Row:
    """SIGKILL the registry, wait the outage, restart it: all services listed how soon?"""
    times = []
    with RegistryProcess() as reg, RegMgr(_connection(reg, transport)) as mgr:
        for i in range(COUNT):
            mgr.attach(Service(f"svc{i}", {"kind": "restore", "n": i}))
        if _until(lambda: len(reg.index()) == COUNT, 60) is None:
            raise RuntimeError("services never registered")
        for outage in outages:
            reg.kill()
            gevent.sleep(outage)
            reg.start()
            times.append(_until(lambda: len(reg.index()) == COUNT, 60, poll=0.005))
    worst = max((t for t in times if t is not None), default=None)
    samples = ", ".join(f"{o:g} s: {_s(t)}" for o, t in zip(outages, times))
    return ("restore after an outage", transport,
            f"worst {_s(worst)} s after accept ({samples}); 2.2-4.4 connects/s while down",
            "worst 0.5 s after accept")


def stale_entry_race(conn: TCP, listed: Callable[[], Container[str]], tries: int
                     ) -> tuple[int, int]:
    """Register ``svc`` over ``conn`` ``tries`` times while an older entry of that
    name leaves at the same moment; (confirmed, confirmed but not ours).

    ``listed()`` gives the names the registry lists now. Once the older
    entry's close is processed, only our own entry can be listed: a
    confirmation whose entry is then missing (or whose connection the
    registry closed) was not ours.
    """
    def until(condition: Callable[[], bool]) -> None:
        if _until(condition, 5) is None:
            raise RuntimeError(f"the registry never settled: {condition}")

    confirmed = wrong = 0
    for _ in range(tries):
        holder = gevent.socket.create_connection((conn.host, conn.new_port))
        holder.sendall(b"svc a 1\n")
        until(lambda: "svc" in listed())
        # The holder leaves just before, or just after, our line reaches the registry.
        closer = gevent.spawn_later(random.choice((0, random.uniform(0, 0.003))), holder.close)
        if random.random() < 0.5:
            gevent.sleep(0)
        try:
            registration = conn.open_new("svc", {"a": "1"})
        except (RegistryError, ConnectionError):
            closer.join()
            continue
        closer.join()
        confirmed += 1
        gevent.sleep(0.05)
        if "svc" not in listed() or registration.peer_closed:
            wrong += 1
        registration.close()
        until(lambda: "svc" not in listed())
    return confirmed, wrong


def not_ours(tries: int) -> Row:
    """An older entry of the same name leaves while we register: count wrong confirmations."""
    with RegistryProcess() as reg:
        conn = TCP(reg.host, new_port=reg.new_port, find_port=reg.find_port,
                   event_port=reg.event_port)
        confirmed, wrong = stale_entry_race(conn, reg.index, tries)
    return ("registration confirmed but not ours", "tcp",
            f"{wrong} of {confirmed} confirmed ({tries} tries)", "0")


def persist(transport: str) -> Row:
    """A persistent service's client restarts: how soon is it registered again?"""
    with RegistryProcess() as reg:
        def connect() -> TCP | Styx:
            conn = _connection(reg, transport)
            if isinstance(conn, Styx):
                conn.user = "owner"
            return conn

        with RegMgr(connect()) as mgr:
            svc = mgr.attach(Service("keep", {"persist": "1"}))
            _until(lambda: svc.registered, 10)
        with RegMgr(connect()) as mgr:
            svc = mgr.attach(Service("keep", {"persist": "1"}))
            took = _until(lambda: svc.registered, 5)
    if transport == "styx":
        return ("persist + reconnect", transport, f"adopted in {_s(took)} s",
                "adopted within 1 s")
    return ("persist + reconnect", transport,
            f"registered: {_s(took)} within 5 s (refused, retried every 0.2-0.45 s, as documented)",
            "documented")


def find_vs_registration(tries: int) -> Row:
    """Register on one connection and find on another at the same moment, both orders."""
    listed = {"registration first": 0, "find first": 0}
    with RegistryProcess() as reg:
        for i in range(tries):
            for order in listed:
                name = f"race{i}{order[0]}"
                finder = gevent.socket.create_connection((reg.host, reg.find_port))
                new = gevent.socket.create_connection((reg.host, reg.new_port))
                if order == "registration first":
                    new.sendall(f"{name} a 1\n".encode())
                    finder.sendall(b"\n")
                else:
                    finder.sendall(b"\n")
                    new.sendall(f"{name} a 1\n".encode())
                reply = b""
                while chunk := finder.recv(65536):
                    reply += chunk
                finder.close()
                listed[order] += name.encode() in reply
                new.close()
        _until(lambda: not find_over_tcp(reg.host, reg.find_port), 5)
    return ("find vs simultaneous registration", "tcp",
            "; ".join(f"{order}: {n}/{tries}" for order, n in listed.items()), ">= 49/50 both orders")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short sample of each")
    parser.add_argument("--long", action="store_true", help="add the 120 s and 10 min runs")
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"python -m bench.faults: {reason}", file=sys.stderr)
        return 2
    transports = args.transports.split(",")
    partitions = [10.0] if args.quick else [10.0, 30.0] + ([120.0] if args.long else [])
    restarts = [5.0] + ([120.0] if args.long else [])
    outages = [0.1, 1.0] if args.quick else [0.1, 1.0, 5.0, 30.0] + ([600.0] if args.long else [])
    jobs: list[Callable[[], Row]] = []
    for transport in transports:
        jobs += [lambda t=transport, s=s: partition(t, s) for s in partitions]
        jobs.append(lambda t=transport: hung(t, 12.0 if args.quick else 30.0))
        jobs += [lambda t=transport, s=s: silent_restart(t, s) for s in restarts]
        jobs.append(lambda t=transport: restore(t, outages))
        jobs.append(lambda t=transport: persist(t))
    jobs.append(lambda: not_ours(20 if args.quick else 200))
    jobs.append(lambda: find_vs_registration(10 if args.quick else 50))
    command = "python -m bench.faults" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    print(f"`{command}`, {COUNT} services, default probe and keepalive settings\n")
    print("| fault | transport | measured | goal |\n|---|---|---|---|", flush=True)
    failed = 0
    for job in jobs:
        try:
            print("| " + " | ".join(job()) + " |", flush=True)
        except Exception as err:  # one failed scenario must not lose the others
            failed += 1
            print(f"| (failed) | | {type(err).__name__}: {err} | |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
