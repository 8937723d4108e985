"""A real ZooKeeper ensemble on loopback, for tests and the bench.

:class:`Ensemble` runs three (or any number of) ZooKeeper servers from
Debian's ``zookeeper`` package as child ``java`` processes, each with its
own ``zoo.cfg``, ``myid`` and data directory under one temporary directory,
on free loopback ports. Ticks are short (200 ms) so that a quorum forms in
a few seconds and sessions may be as short as 0.4 s; a server can be
SIGKILLed and started again. Nothing here needs kazoo: readiness is asked
with ZooKeeper's ``srvr`` four-letter command.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Optional

__all__ = ["Ensemble", "zookeeper_available", "ZOOKEEPER_JAR"]

#: Debian's jar; its manifest's Class-Path names every dependency.
ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
TICK_MS = 200


def zookeeper_available() -> bool:
    """True when Debian's ZooKeeper and a ``java`` are installed."""
    return os.path.exists(ZOOKEEPER_JAR) and shutil.which("java") is not None


def _free_ports(count: int) -> list[int]:
    """Ports free now, and *below* the kernel's ephemeral range.

    A follower does not listen on its quorum port, nor a killed server on
    any: a port the kernel hands out for ``bind(0)`` (a registry frontend's,
    another test's) could take one, and the ensemble would then connect to
    that stranger. Below the ephemeral range, only explicit binds compete.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(max(1024, low - 12000), low)
        if port in ports:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def four_letter(port: int, word: str, timeout: float = 1.0) -> str:
    """Send a four-letter command to the server on ``port``; '' if it does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(word.encode())
            chunks = []
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode("utf-8", "replace")
    except OSError:
        return ""


class Ensemble:
    """``size`` ZooKeeper servers forming one ensemble on 127.0.0.1.

    ``hosts`` is the kazoo connection string; :meth:`url` the
    ``zookeeper://`` URL of ``regmgr serve --store``. Use as a context
    manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, size: int = 3, *, java: str = "java") -> None:
        self.size = size
        self.java = java
        self.dir: Optional[str] = None
        ports = _free_ports(3 * size)
        self.client_ports = ports[:size]
        self._peer_ports = ports[size:2 * size]
        self._election_ports = ports[2 * size:]
        self._procs: dict[int, subprocess.Popen] = {}

    @property
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.client_ports)

    def url(self, root: str = "/regmgr") -> str:
        return f"zookeeper://{self.hosts}{root}"

    def _write_config(self, i: int) -> str:
        assert self.dir is not None
        home = os.path.join(self.dir, f"zk{i}")
        os.makedirs(os.path.join(home, "data"), exist_ok=True)
        with open(os.path.join(home, "data", "myid"), "w") as f:
            f.write(f"{i + 1}\n")
        lines = [
            f"tickTime={TICK_MS}",
            "initLimit=20",
            "syncLimit=10",
            f"minSessionTimeout={2 * TICK_MS}",
            "maxSessionTimeout=60000",
            f"dataDir={home}/data",
            f"clientPort={self.client_ports[i]}",
            "clientPortAddress=127.0.0.1",
            "admin.enableServer=false",
            "4lw.commands.whitelist=srvr,ruok,mntr",
            "maxClientCnxns=0",
            "forceSync=no",
        ] + [
            f"server.{j + 1}=127.0.0.1:{self._peer_ports[j]}:{self._election_ports[j]}"
            for j in range(self.size)
        ]
        config = os.path.join(home, "zoo.cfg")
        with open(config, "w") as f:
            f.write("\n".join(lines) + "\n")
        return config

    def start_server(self, i: int) -> None:
        """Start server ``i`` (0-based); its data directory is kept across restarts."""
        if i in self._procs and self._procs[i].poll() is None:
            raise RuntimeError(f"ZooKeeper server {i} already running")
        config = self._write_config(i)
        assert self.dir is not None
        log = open(os.path.join(self.dir, f"zk{i}", "server.log"), "ab")
        command = [
            self.java, "-Xmx96m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Dzookeeper.admin.enableServer=false", "-Dzookeeper.jmx.log4j.disable=true",
            "-cp", ZOOKEEPER_JAR, _MAIN, config,
        ]
        try:
            self._procs[i] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def start(self, timeout: float = 60.0) -> None:
        """Start every server and wait until they all serve."""
        self.dir = tempfile.mkdtemp(prefix="regmgr-zk-")
        try:
            for i in range(self.size):
                self.start_server(i)
            self.wait_serving(timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def mode(self, i: int) -> Optional[str]:
        """``leader``, ``follower``, ``standalone`` or None (not serving)."""
        for line in four_letter(self.client_ports[i], "srvr").splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None

    def running(self, i: int) -> bool:
        proc = self._procs.get(i)
        return proc is not None and proc.poll() is None

    def wait_serving(self, servers: Optional[list[int]] = None, timeout: float = 60.0) -> None:
        """Wait until each of ``servers`` (default: every running one) is in a quorum."""
        wanted = servers if servers is not None else [i for i in range(self.size)
                                                      if self.running(i)]
        deadline = time.monotonic() + timeout
        while True:
            modes = {i: self.mode(i) for i in wanted}
            if all(mode in ("leader", "follower") for mode in modes.values()):
                return
            for i in wanted:
                if not self.running(i):
                    raise RuntimeError(f"ZooKeeper server {i} exited:\n{self.log(i)[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ZooKeeper ensemble not serving after {timeout} s: {modes}")
            time.sleep(0.1)

    def log(self, i: int) -> str:
        assert self.dir is not None
        try:
            with open(os.path.join(self.dir, f"zk{i}", "server.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill(self, i: int) -> None:
        """SIGKILL server ``i`` and reap it."""
        proc = self._procs.get(i)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def restart(self, i: int, timeout: float = 60.0) -> None:
        """Start a killed server again and wait until it has rejoined the quorum."""
        self.kill(i)
        self.start_server(i)
        self.wait_serving([i], timeout=timeout)

    def stop(self) -> None:
        """Kill every server and remove the temporary directory."""
        for i in list(self._procs):
            self.kill(i)
        self._procs.clear()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "Ensemble":
        if self.dir is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
