"""Test helpers: a real registry in-process or as a child process, and fixtures.

* :class:`RegistryServer` runs the embedded registry in this process on
  ephemeral ports; ``restart()`` empties it and keeps the ports.
* :class:`RegistryProcess` runs ``regmgr serve`` as a child process so a
  test can SIGKILL it (the registry dies without closing anything
  gracefully) and start it again on the same ports.

Both are context managers. The pytest fixtures ``registry_server`` and
``registry_process`` give a started one and stop it afterwards; this module
is registered as a pytest plugin when regmgr is installed.
"""
from __future__ import annotations

import collections
import os
import re
import signal
import sys
from typing import Iterator, Optional, Sequence, Union

import gevent
import gevent.event
import gevent.socket
from gevent import subprocess

from .server import EmbeddedRegistry
from .wire import parse_services

__all__ = ["RegistryServer", "RegistryProcess", "registry_server", "registry_process",
           "find_over_tcp", "open_sockets"]

_LISTENING = re.compile(
    rb"registry listening on \S+: new (\d+), find (\d+), event (\d+)(?:, styx (\d+))?")


def find_over_tcp(host: str, find_port: int, filter_line: str = "", timeout: float = 5.0
                  ) -> dict[str, dict[str, str]]:
    """One find through the gateway, with no client library in between."""
    with gevent.socket.create_connection((host, find_port), timeout=timeout) as sock:
        sock.sendall(filter_line.encode("utf-8") + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return parse_services(b"".join(chunks).decode("utf-8"))


def open_sockets() -> int:
    """Sockets among this process's file descriptors (Linux ``/proc``)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass  # closed while listing
    return count


class RegistryServer(EmbeddedRegistry):
    """The embedded registry in this process, on ephemeral ports by default.

    Styx is served too (``styx_port=None`` turns it off), so that tests can
    reach it over either transport.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        new_port: int = 0,
        find_port: int = 0,
        event_port: int = 0,
        dbfile: Optional[Union[str, os.PathLike]] = None,
        styx_port: Optional[int] = 0,
        store: Optional[str] = None,
        session_timeout: float = 5.0,
    ) -> None:
        super().__init__(host, new_port=new_port, find_port=find_port,
                         event_port=event_port, dbfile=dbfile, styx_port=styx_port,
                         store=store, session_timeout=session_timeout)

    def index(self) -> dict[str, dict[str, str]]:
        """Every registered service, straight from the model."""
        return parse_services(self.registry.index())


class RegistryProcess:
    """``regmgr serve`` in a child process, for outage tests that SIGKILL it.

    Styx is served on ``styx_port`` (0, the default, picks one; None: off).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        new_port: int = 0,
        find_port: int = 0,
        event_port: int = 0,
        dbfile: Optional[Union[str, os.PathLike]] = None,
        styx_port: Optional[int] = 0,
        startup_timeout: float = 15.0,
        store: Optional[str] = None,
        session_timeout: float = 5.0,
        args: Sequence[str] = (),
        nofile: Optional[int] = None,
    ) -> None:
        """``args`` are more ``regmgr serve`` options; ``nofile`` caps the child's descriptors."""
        self.host = host
        self.store = store
        self.session_timeout = session_timeout
        self.args = list(args)
        self.nofile = nofile
        self.new_port = new_port
        self.find_port = find_port
        self.event_port = event_port
        self.styx_port = styx_port
        self.dbfile = dbfile
        self.startup_timeout = startup_timeout
        self.proc: Optional[subprocess.Popen] = None
        self._log: collections.deque[bytes] = collections.deque(maxlen=200)
        #: Every traceback the child printed, over all its starts (a test fails on one).
        self.tracebacks: list[str] = []
        self._drainer: Optional[gevent.Greenlet] = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def output(self) -> str:
        """The last lines the child logged (for failure messages)."""
        return b"".join(self._log).decode("utf-8", "replace")

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "regmgr", "serve", "--host", self.host,
               "--new-port", str(self.new_port), "--find-port", str(self.find_port),
               "--event-port", str(self.event_port)]
        if self.dbfile is not None:
            cmd += ["-f", os.fspath(self.dbfile)]
        if self.styx_port is not None:
            cmd += ["--styx-port", str(self.styx_port)]
        if self.store is not None:
            cmd += ["--store", self.store, "--session-timeout", str(self.session_timeout)]
        return cmd + self.args

    def _limit_descriptors(self) -> None:
        """In the child before exec: soft and hard descriptor limit ``nofile``."""
        import resource
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def start(self) -> None:
        """Start the child and wait until its ports accept connections."""
        if self.running:
            raise RuntimeError("registry process already running")
        self._log.clear()
        proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=None if self.nofile is None else self._limit_descriptors)
        self.proc = proc
        ready = gevent.event.AsyncResult()
        self._drainer = gevent.spawn(self._drain, proc, ready)
        try:
            ports = ready.get(timeout=self.startup_timeout)
        except BaseException:
            self.kill()
            raise
        if ports is None:
            proc.wait()
            raise RuntimeError(f"regmgr serve exited with status {proc.returncode}:\n{self.output}")
        self.new_port, self.find_port, self.event_port, self.styx_port = ports

    def _drain(self, proc: subprocess.Popen, ready: gevent.event.AsyncResult) -> None:
        """Read the child's log: report its ports once, keep the pipe from filling."""
        trace: Optional[list[bytes]] = None
        for line in proc.stderr:
            self._log.append(line)
            if line.startswith(b"Traceback"):
                trace = []
            if trace is not None:
                trace.append(line)
                if not line[:1].isspace() and not line.startswith(b"Traceback"):
                    self.tracebacks.append(b"".join(trace).decode("utf-8", "replace"))
                    trace = None
            match = _LISTENING.search(line)
            if match and not ready.ready():
                new, find, event, styx = match.groups()
                ready.set((int(new), int(find), int(event), None if styx is None else int(styx)))
        if not ready.ready():
            ready.set(None)

    def _end(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait()
        if self._drainer is not None:
            self._drainer.join(timeout=5)
        self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the registry vanishes without a word, like a crash."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown."""
        self._end(signal.SIGTERM)

    def restart(self) -> None:
        """SIGKILL, then start again on the same ports."""
        self.kill()
        self.start()

    def index(self) -> dict[str, dict[str, str]]:
        """Every registered service, through the find port."""
        return find_over_tcp(self.host, self.find_port)

    def __enter__(self) -> "RegistryProcess":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixtures
    pass
else:
    @pytest.fixture
    def registry_server() -> Iterator[RegistryServer]:
        """A started in-process registry on ephemeral ports."""
        with RegistryServer() as server:
            yield server

    @pytest.fixture
    def registry_process() -> Iterator[RegistryProcess]:
        """A started ``regmgr serve`` child process on ephemeral ports."""
        with RegistryProcess() as process:
            yield process
