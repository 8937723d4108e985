"""Hostile clients against ``regmgr serve`` (issue 11's goal table, issue 10's find probe).

    python -m bench.attacks            # every attack at the issue's sizes
    python -m bench.attacks --quick    # small sizes: checks the code, measures little

Each attack starts its own ``regmgr serve`` child
(:class:`regmgr.testing.RegistryProcess`) and measures it from outside:
find latency of a well-behaved client on another connection while the
attack runs, the child's resident memory from ``/proc``, what it logged.
The functions return dicts of figures, so ``tests/test_server_hostile.py``
runs the same code at small sizes with generous bounds.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional

import gevent
import gevent.event
import gevent.socket

from regmgr import Styx, ninep
from regmgr.ninep import NOFID, NOTAG, ORDWR, OREAD, OWRITE
from regmgr.testing import RegistryProcess

__all__ = ["flood", "styx_fids", "idle_new", "descriptors", "fuzz", "find_order", "main"]

Figures = dict[str, Any]


# -- plumbing --------------------------------------------------------------------

def rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (Linux ``/proc``)."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)] if ordered else float("nan")


@contextmanager
def serve(*args: str, nofile: Optional[int] = None) -> Iterator[RegistryProcess]:
    with RegistryProcess(args=args, nofile=nofile) as reg:
        yield reg


def connect(port: int, timeout: float = 10.0) -> gevent.socket.socket:
    return gevent.socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_all(sock: gevent.socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def gateway_find(reg: RegistryProcess, line: bytes = b"kind probe\n") -> bytes:
    with connect(reg.find_port) as sock:
        sock.sendall(line)
        return read_all(sock)


def register(reg: RegistryProcess, line: bytes) -> gevent.socket.socket:
    sock = connect(reg.new_port)
    sock.sendall(line)
    return sock


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.02)
    return True


class FindLoop:
    """A well-behaved client: a gateway find every ``interval`` s, latencies kept."""

    def __init__(self, reg: RegistryProcess, expect: bytes, interval: float = 0.01) -> None:
        self.reg = reg
        self.expect = expect
        self.interval = interval
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = gevent.event.Event()
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                ok = gateway_find(self.reg) == self.expect
            except OSError:
                ok = False
            if ok:
                self.latencies.append(time.monotonic() - started)
            else:
                self.failures += 1
            self._stop.wait(self.interval)

    def stop(self) -> Figures:
        self._stop.set()
        self._greenlet.join()
        ms = [1000 * t for t in self.latencies]
        return {"finds": len(ms), "find_failures": self.failures,
                "find_p50_ms": percentile(ms, 50), "find_p99_ms": percentile(ms, 99),
                "find_max_ms": max(ms, default=float("nan"))}


def probe_services(reg: RegistryProcess, count: int = 3) -> tuple[list, bytes]:
    """``count`` small services the find loop looks for, and their listing."""
    socks = [register(reg, b"probe%d kind probe\n" % i) for i in range(count)]
    assert wait_until(lambda: gateway_find(reg).count(b"\n") == count, 10)
    return socks, gateway_find(reg)


class RawStyx:
    """One Styx session driven message by message (replies read in order)."""

    def __init__(self, port: int, uname: str = "bench") -> None:
        self.sock = connect(port)
        self.decoder = ninep.Decoder(ninep.IOHDRSZ + 65536)
        self.tag = 0
        self.rpc(ninep.Tversion(NOTAG, 8192 + ninep.IOHDRSZ, "9P2000"))
        self.rpc(ninep.Tattach(self.next_tag(), 0, NOFID, uname, ""))

    def next_tag(self) -> int:
        self.tag = (self.tag + 1) % 60000
        return self.tag

    def rpc(self, msg: Any) -> Any:
        self.sock.sendall(ninep.encode(msg))
        while True:
            reply = self.decoder.next_message()
            if reply is not None:
                return reply
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("server closed the session")
            self.decoder.feed(data)

    def open(self, fid: int, name: str, mode: int) -> None:
        self.rpc(ninep.Twalk(self.next_tag(), 0, fid, (name,)))
        reply = self.rpc(ninep.Topen(self.next_tag(), fid, mode))
        assert isinstance(reply, ninep.Ropen), reply

    def read(self, fid: int, offset: int = 0, count: int = 8192) -> Any:
        return self.rpc(ninep.Tread(self.next_tag(), fid, offset, count))

    def close(self) -> None:
        self.sock.close()


# -- the attacks ---------------------------------------------------------------------

def flood(lines: int = 12, line_bytes: int = 63_000) -> Figures:
    """Registrations of thousands of new attributes, each in one 63 KB line."""
    with serve() as reg:
        keep, expect = probe_services(reg)
        finder = FindLoop(reg, expect)
        gevent.sleep(0.5)
        pairs = line_bytes // 9

        def attack(n: int) -> bool:
            line = b"flood%d " % n + b" ".join(b"a%05d v" % i for i in range(pairs))[:line_bytes]
            sock = register(reg, line.rsplit(b" ", 1)[0] + b"\n")
            try:
                return sock.recv(1) == b""  # refused: the server closes
            except OSError:
                return True
            finally:
                sock.close()

        started = time.monotonic()
        jobs = [gevent.spawn(attack, n) for n in range(lines)]
        gevent.joinall(jobs)
        refused = sum(bool(job.value) for job in jobs)
        took = time.monotonic() - started
        gevent.sleep(0.5)
        figures = finder.stop()
        figures.update(lines=lines, refused=refused, attack_s=took,
                       flood_listed=gateway_find(reg, b"\n").count(b"flood"))
        for sock in keep:
            sock.close()
        return figures


def styx_fids(fids: int = 300, listing_bytes: int = 2 << 20, changing: bool = False) -> Figures:
    """``fids`` fids of one session each reading ``index`` of a ``listing_bytes`` registry.

    ``changing``: the registry changes between reads, so no two snapshots are shared.
    """
    with serve("--max-value-bytes", "4096") as reg:
        conn = Styx(reg.host, reg.styx_port)
        value = "v" * 4000
        regs = [conn.open_new(f"big{i}", {"pad": value})
                for i in range(max(1, listing_bytes // 4012))]
        session = RawStyx(reg.styx_port)
        before = rss(reg.proc.pid)
        held, refused = 0, 0
        writer = regs[0]
        for i in range(fids):
            fid = 100 + i
            session.open(fid, "index", OREAD)
            if changing:
                writer.update({"n": str(i)})
            reply = session.read(fid)
            if isinstance(reply, ninep.Rread) and reply.data:
                held += 1
            else:
                refused += 1
        after = rss(reg.proc.pid)
        session.close()
        for r in regs:
            r.close()
        return {"fids": fids, "listing_mib": listing_bytes / (1 << 20), "changing": changing,
                "reads_answered": held, "reads_refused": refused,
                "rss_delta_mib": (after - before) / (1 << 20)}


_IDLE_ATTACKER = """
import socket, sys, time, selectors
port, count = int(sys.argv[1]), int(sys.argv[2])
started = time.monotonic()
socks = []
for _ in range(count):
    try:
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=30))
    except OSError:
        break
print(len(socks), time.monotonic() - started, flush=True)
sel = selectors.DefaultSelector()
for s in socks:
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
last, left = 0.0, len(socks)
while left and time.monotonic() - started < 120:
    for key, _ in sel.select(1):
        sel.unregister(key.fileobj)
        key.fileobj.close()
        left -= 1
        last = time.monotonic() - started
print(left, last, flush=True)
"""


def idle_new(count: int = 5000, deadline: float = 5.0) -> Figures:
    """``count`` connections to the new port that never name a service.

    The attacker is another process, so that its work does not delay the
    measuring client.
    """
    from gevent import subprocess
    with serve("--request-timeout", str(deadline)) as reg:
        keep, expect = probe_services(reg)
        finder = FindLoop(reg, expect)
        before = rss(reg.proc.pid)
        attacker = subprocess.Popen([sys.executable, "-c", _IDLE_ATTACKER, str(reg.new_port),
                                     str(count)], stdout=subprocess.PIPE, text=True)
        assert attacker.stdout is not None
        opened, open_s = attacker.stdout.readline().split()
        peak = rss(reg.proc.pid)
        left, last = attacker.stdout.readline().split()
        attacker.wait()
        figures = finder.stop()
        for sock in keep:
            sock.close()
        figures.update(idle=int(opened), open_s=float(open_s), not_closed=int(left),
                       all_closed_after_s=float(last), rss_delta_mib=(peak - before) / (1 << 20))
        return figures


def descriptors(nofile: int = 256, idle: int = 400) -> Figures:
    """The server's descriptor limit reached by idle connections."""
    with serve("--request-timeout", "30", nofile=nofile) as reg:
        keep, expect = probe_services(reg)
        session = RawStyx(reg.styx_port)  # an existing client
        session.open(1, "find", ORDWR)
        socks = []
        for _ in range(idle):
            try:
                socks.append(connect(reg.new_port, timeout=2))
            except OSError:
                break
        gevent.sleep(1)
        styx_ok, gateway_ok, latencies = 0, 0, []
        for _ in range(20):
            started = time.monotonic()
            session.rpc(ninep.Twrite(session.next_tag(), 1, 0, b"kind probe"))
            reply = session.read(1)
            latencies.append(1000 * (time.monotonic() - started))
            styx_ok += isinstance(reply, ninep.Rread) and reply.data == expect
            try:
                gateway_ok += gateway_find(reg) == expect
            except OSError:
                pass
        session.close()
        for sock in socks + keep:
            sock.close()
        output = reg.output
        return {"nofile": nofile, "idle": len(socks), "styx_finds_ok": styx_ok,
                "gateway_finds_ok": gateway_ok, "finds": 20,
                "styx_find_max_ms": max(latencies),
                "log_lines_out_of_descriptors": output.count("out of descriptors"),
                "tracebacks": len(reg.tracebacks)}


def _nine_p(rng: random.Random) -> bytes:
    """One 9P2000 message, valid or mutated, as bytes."""
    fid, tag = rng.randrange(8), rng.randrange(0x10000)
    msg = rng.choice([
        lambda: ninep.Tversion(NOTAG, rng.choice([64, 8192, 1 << 20]), rng.choice(["9P2000", "x"])),
        lambda: ninep.Tattach(tag, fid, NOFID, "fuzz", ""),
        lambda: ninep.Twalk(tag, rng.randrange(3), fid,
                            tuple(rng.choice(["new", "find", "index", "event", "..", "x", "fz"])
                                  for _ in range(rng.randrange(3)))),
        lambda: ninep.Topen(tag, fid, rng.choice([OREAD, OWRITE, ORDWR, 0x40 | OWRITE, 3, 0x13])),
        lambda: ninep.Tread(tag, fid, rng.choice([0, 0, 5, 1 << 62]), rng.choice([0, 9, 8000])),
        lambda: ninep.Twrite(tag, fid, 0, rng.choice([b"fz a b", b"kind *", b"", b"a", b"\xff"])),
        lambda: ninep.Tclunk(tag, fid),
        lambda: ninep.Tremove(tag, fid),
        lambda: ninep.Tstat(tag, fid),
        lambda: ninep.Tflush(tag, rng.randrange(0x10000)),
    ])()
    data = bytearray(ninep.encode(msg))
    mutation = rng.randrange(4)
    if mutation == 1:
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif mutation == 2:
        del data[rng.randrange(len(data)):]
    elif mutation == 3:
        data = bytearray(rng.randbytes(rng.randrange(1, 64)))
    return bytes(data)


def _line(rng: random.Random) -> bytes:
    words = [rng.choice([b"fz", b"kind", b"*", b"'", b"''", b"a b", b"\xff\xfe", b"\x00", b"new",
                         b"x" * rng.randrange(5000), b"\t", b"persist", b"1"])
             for _ in range(rng.randrange(8))]
    line = b" ".join(words)
    if rng.random() < 0.8:
        line += b"\n"
    return line


def fuzz(inputs: int = 800_000, seconds: float = 3600.0, seed: int = 11) -> Figures:
    """Random and mutated inputs on all four ports; the server must still answer right."""
    rng = random.Random(seed)
    with serve("--request-timeout", "1") as reg:
        keep, expect = probe_services(reg)
        deadline = time.monotonic() + seconds
        sent, rss_samples = 0, []
        warm = max(1, inputs // 10)
        while sent < inputs and time.monotonic() < deadline:
            port = rng.choice(["new", "find", "event", "styx"])
            batch = rng.randrange(1, 200)
            if port == "styx":
                data = b"".join(_nine_p(rng) for _ in range(batch))
                if rng.random() < 0.7:  # most sessions start right, so deeper states get fuzzed
                    data = ninep.encode(ninep.Tversion(NOTAG, 8192, "9P2000")) + \
                        ninep.encode(ninep.Tattach(1, 0, NOFID, "fuzz", "")) + data
            else:
                data = b"".join(_line(rng) for _ in range(batch))
            sent += batch
            try:
                with connect(getattr(reg, f"{port}_port"), timeout=5) as sock:
                    sock.sendall(data)
                    sock.settimeout(0.05)
                    try:
                        while sock.recv(65536):
                            pass
                    except OSError:
                        pass
            except OSError:
                pass
            if sent >= warm and (not rss_samples or sent - rss_samples[-1][0] >= warm):
                rss_samples.append((sent, rss(reg.proc.pid)))
        # Still answering, and right: a gateway find, a Styx registration seen by both.
        answered = gateway_find(reg) == expect
        conn = Styx(reg.host, reg.styx_port)
        after = conn.open_new("after-fuzz", {"kind": "probe"})
        both = (b"after-fuzz" in gateway_find(reg)
                and "after-fuzz" in conn.find({"kind": "probe"}))
        after.close()
        for sock in keep:
            sock.close()
        growth = (rss_samples[-1][1] - rss_samples[0][1]) if rss_samples else 0
        return {"inputs": sent, "answered_right": answered and both,
                "rss_mib": rss_samples[-1][1] / (1 << 20) if rss_samples else float("nan"),
                "rss_growth_after_warmup_mib": growth / (1 << 20),
                "tracebacks": len(reg.tracebacks)}


def find_order(tries: int = 50) -> Figures:
    """Issue 10 item 5: a registration and a find sent at the same moment, in both orders.

    Both connections are open; the two sends go back to back. ``sequential``
    is the harder case where the new connection is only opened after the
    find was sent (the registration then really arrives later).
    """
    figures: Figures = {"tries": tries}
    with serve() as reg:
        background = [register(reg, b"bg%d a b\n" % i) for i in range(100)]
        wait_until(lambda: gateway_find(reg, b"\n").count(b"\n") == 100, 10)
        for order in ("registration_first", "find_first", "find_first_sequential"):
            hits = 0
            for i in range(tries):
                name = b"probe-%s-%d" % (order.encode(), i)
                if order == "find_first_sequential":
                    finder = connect(reg.find_port)
                    finder.sendall(b"\n")
                    owner = register(reg, name + b" x 1\n")
                else:
                    owner, finder = connect(reg.new_port), connect(reg.find_port)
                    first, second = ((owner, name + b" x 1\n"), (finder, b"\n"))
                    if order == "find_first":
                        first, second = second, first
                    first[0].sendall(first[1])
                    second[0].sendall(second[1])
                hits += name + b" " in read_all(finder)
                finder.close()
                owner.close()
            figures[order] = hits
        for sock in background:
            sock.close()
    return figures


# -- command line -------------------------------------------------------------------

def _rows(quick: bool) -> Iterator[tuple[str, Figures, str]]:
    if quick:
        yield "attribute flood (3 lines of 63 KB)", flood(3), "refused; find p99 <= 20 ms"
        yield "50 Styx fids on a 256 KiB listing", styx_fids(50, 256 << 10), "shared"
        yield "300 idle new-port connections", idle_new(300, 2.0), "closed at the deadline"
        yield "descriptor limit (128)", descriptors(128, 200), "finds answered; 1 log line"
        yield "fuzz, 5,000 inputs", fuzz(5000, 60), "alive, RSS flat"
        yield "find vs simultaneous registration", find_order(20), ">= 49/50 both orders"
        return
    yield "attribute flood (12 lines of 63 KB)", flood(), "refused; find p99 <= 20 ms"
    yield "300 Styx fids on a 2 MiB listing", styx_fids(), "<= +50 MiB"
    yield ("300 Styx fids on a 2 MiB listing, changing", styx_fids(changing=True),
           "bounded (16 MiB per session)")
    yield "5,000 idle new-port connections", idle_new(), "closed at the deadline; find p99 <= 20 ms"
    yield "descriptor limit reached (1,024)", descriptors(1024, 1100), "finds answered; 1 log line"
    yield "find vs simultaneous registration", find_order(), ">= 49/50 both orders"
    yield "fuzz, 800,000 inputs", fuzz(), "alive, RSS flat"


def _format(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"`python -m bench.attacks{' --quick' if args.quick else ''}`: "
          f"{os.cpu_count()} CPUs, load {load:.1f} at start")
    print()
    print("| attack | measured | goal |")
    print("|---|---|---|")
    for attack, figures, goal in _rows(args.quick):
        text = ", ".join(f"{key} {_format(value)}" for key, value in figures.items())
        print(f"| {attack} | {text} | {goal} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
