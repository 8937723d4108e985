"""What every scenario uses: the registry process, client processes, statistics, the table.

The registry is ``regmgr serve`` in a child process
(:class:`regmgr.testing.RegistryProcess`); each client role is a
``python -m bench.worker`` child driven over a JSON line protocol, so that
nothing measured shares a process (or a gevent loop) with the harness.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Optional

import gevent
from gevent import subprocess

from regmgr.testing import RegistryProcess

__all__ = ["Row", "Client", "registry", "clients", "percentile", "summary", "table",
           "process_cpu", "process_rss", "TRANSPORTS"]

#: The transports a worker can use (see :func:`bench.worker.connection`).
TRANSPORTS = ("tcp", "styx")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: with fewer than 100 values, p99 is the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Row:
    """One line of the result table."""

    scenario: str
    metric: str
    transport: str
    values: list[float]
    unit: str
    goal: str = ""
    met: Optional[bool] = None
    note: str = ""
    runs: int = 0  # repetitions that produced ``values`` (0: one value per run)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def p99(self) -> float:
        return percentile(self.values, 99)


def summary(rows: Sequence[Row]) -> str:
    """One line per row, for progress on stderr."""
    return "\n".join(f"  {r.scenario} {r.metric} [{r.transport}]: median {_num(r.median)} "
                     f"p99 {_num(r.p99)} {r.unit} {r.note}" for r in rows)


def _num(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(rows: Sequence[Row], header: str) -> str:
    """The rows as a Markdown table, ``header`` as a line above it."""
    lines = [header, "",
             "| id | metric | transport | median | p99 | unit | samples (runs) | goal | met | notes |",
             "|----|--------|-----------|-------:|----:|------|----------------|------|-----|-------|"]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        samples = f"{len(r.values)} ({r.runs or len(r.values)})"
        lines.append(f"| {r.scenario} | {r.metric} | {r.transport} | {_num(r.median)} | "
                     f"{_num(r.p99)} | {r.unit} | {samples} | {r.goal} | {met} | {r.note} |")
    return "\n".join(lines)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` now (Linux ``/proc``)."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def registry() -> Iterator[RegistryProcess]:
    """A fresh ``regmgr serve`` child on ephemeral ports, Styx included."""
    with RegistryProcess() as process:
        yield process


@dataclass
class Client:
    """One ``bench.worker`` process: :meth:`call` sends a request and waits for its reply."""

    proc: subprocess.Popen
    log: IO[bytes]  # the file the worker's stderr goes to
    name: str

    @classmethod
    def start(cls, reg: RegistryProcess, transport: str, name: str) -> "Client":
        spec = {"transport": transport, "host": reg.host, "new": reg.new_port,
                "find": reg.find_port, "event": reg.event_port, "styx": reg.styx_port}
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen([sys.executable, "-m", "bench.worker", json.dumps(spec)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        client = cls(proc, log, name)
        client._reply(60)
        return client

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run ``op`` in the worker; its reply, or ``RuntimeError`` with its log.

        A worker that has not answered two minutes past the ``timeout`` and
        ``seconds`` the request itself names is taken for hung.
        """
        self.proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        self.proc.stdin.flush()
        return self._reply(120 + args.get("timeout", 0) + args.get("seconds", 0))

    def _reply(self, timeout: float) -> dict[str, Any]:
        with gevent.Timeout(timeout, RuntimeError(f"{self.name}: no reply in {timeout} s")):
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited ({self.proc.wait()}):\n{self.stderr()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}\n{self.stderr()}")
        return reply

    def stderr(self, tail: int = 2000) -> str:
        """The last whole lines the worker logged, about ``tail`` characters."""
        size = self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, size - tail))
        text = self.log.read().decode("utf-8", "replace")
        return text if size <= tail else text.partition("\n")[2]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


@contextmanager
def clients(reg: RegistryProcess, transport: str, *names: str) -> Iterator[list[Client]]:
    """Start one worker per name (in parallel), close them all afterwards."""
    jobs = [gevent.spawn(Client.start, reg, transport, name) for name in names]
    gevent.joinall(jobs)
    started = [job.value for job in jobs if job.successful()]
    try:
        for job in jobs:
            job.get()
        yield started
    finally:
        for client in started:
            client.close()
