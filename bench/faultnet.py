"""Real network faults for the fault tests and ``python -m bench.faults``.

:class:`Namespace` makes a network namespace joined to this one by a veth
pair (this end ``.1``, the namespace's end ``.2`` of a private /30) and
puts iptables DROP rules *inside that namespace only* to cut it off, so
the machine's own rules and loopback are never touched.
:class:`NamespacedRegistry` runs ``regmgr serve`` in it (``ip netns exec``),
to be stopped (SIGSTOP: hung), killed and restarted empty.
:class:`Watcher` is a :class:`~regmgr.Monitor` in another process, whose
view and callbacks the parent follows. Linux and root only:
:func:`unavailable` says why not.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess as std_subprocess
import sys
from typing import Any, Optional

import gevent
import gevent.event
from gevent import subprocess

from regmgr import RegMgr, Service
from regmgr.testing import RegistryProcess

__all__ = ["Namespace", "NamespacedRegistry", "Watcher", "Scene", "unavailable",
           "connection_spec"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_serial = itertools.count()


def _run(*cmd: str) -> None:
    std_subprocess.run(cmd, check=True, capture_output=True, timeout=20)


def unavailable() -> Optional[str]:
    """Why network-fault tests cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces and iptables need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed (Debian: apt-get install iproute2 iptables)"
    try:
        with Namespace():
            pass
    except (OSError, std_subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        return f"cannot make a network namespace here: {err} {detail.decode(errors='replace')}"
    return None


class Namespace:
    """A network namespace behind a veth pair; :meth:`block` cuts it off, :meth:`unblock` heals."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}x{next(_serial)}"
        self.name = f"rgf{tag}"
        self._outer = f"rgo{tag}"
        self._inner = f"rgi{tag}"
        net = random.randrange(1 << 14)  # a /30 inside 10.240.0.0/12 (hosts .1 and .2)
        base = f"10.{240 + (net >> 10)}.{(net >> 2) & 0xFF}.{(net & 3) << 6}"
        prefix, last = base.rsplit(".", 1)
        self.outer_ip = f"{prefix}.{int(last) + 1}"
        #: The registry's address, reached from this namespace through the veth pair.
        self.ip = f"{prefix}.{int(last) + 2}"
        self.blocked = False

    def __enter__(self) -> Namespace:
        _run("ip", "netns", "add", self.name)
        try:
            _run("ip", "link", "add", self._outer, "type", "veth", "peer", "name", self._inner,
                 "netns", self.name)
            _run("ip", "addr", "add", f"{self.outer_ip}/30", "dev", self._outer)
            _run("ip", "link", "set", self._outer, "up")
            _run("ip", "-n", self.name, "addr", "add", f"{self.ip}/30", "dev", self._inner)
            _run("ip", "-n", self.name, "link", "set", self._inner, "up")
            _run("ip", "-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def _iptables(self, action: str) -> None:
        for chain in ("INPUT", "OUTPUT"):
            _run("ip", "netns", "exec", self.name, "iptables", "-w", action, chain, "-j", "DROP")

    def block(self) -> None:
        """Drop every packet in and out of the namespace (a partition, a silent host)."""
        if not self.blocked:
            self._iptables("-I")
            self.blocked = True

    def unblock(self) -> None:
        if self.blocked:
            self._iptables("-D")
            self.blocked = False

    def close(self) -> None:
        """Delete the namespace, its rules and both ends of the veth pair."""
        std_subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=20)
        std_subprocess.run(["ip", "link", "del", self._outer], capture_output=True, timeout=20)

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class NamespacedRegistry(RegistryProcess):
    """``regmgr serve`` inside ``namespace``, on its address; ``extra`` goes on its command line."""

    def __init__(self, namespace: Namespace, extra: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(namespace.ip, **kwargs)
        self.namespace = namespace
        self.extra = extra

    def _command(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace.name] + super()._command() + list(self.extra)

    def pause(self) -> None:
        """SIGSTOP: the registry hangs; its kernel still accepts and acknowledges."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def connection_spec(reg: RegistryProcess, transport: str, **options: float) -> dict[str, Any]:
    """What :class:`Watcher` (and ``bench.faultwatch``) needs to reach ``reg``."""
    return {"transport": transport, "host": reg.host, "new": reg.new_port,
            "find": reg.find_port, "event": reg.event_port, "styx": reg.styx_port,
            "options": options}


class Watcher:
    """A Monitor in a child process (``python -m bench.faultwatch``), followed from here.

    :attr:`view` is its view as its callbacks built it, :attr:`deleted` the
    names its ``on_del`` reported, :attr:`stale` its last ``stale`` value.
    """

    def __init__(self, spec: dict[str, Any], attrs: dict[str, str], settle: float = 2.0) -> None:
        self.view: dict[str, dict[str, str]] = {}
        self.deleted: list[str] = []
        self.stale = True
        self.ready = gevent.event.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.faultwatch", json.dumps(spec), json.dumps(attrs),
             str(settle)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=_ROOT)
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            kind = event["event"]
            if kind == "add" or kind == "mod":
                self.view[event["name"]] = event["attrs"]
            elif kind == "del":
                self.view.pop(event["name"], None)
                self.deleted.append(event["name"])
            elif kind == "stale":
                self.stale = event["stale"]
            self.ready.set()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Scene:
    """A registry in ``net``, ``count`` services owned by this process, a Monitor in another.

    ``probes`` are the clients' probe options, ``server`` extra arguments of
    ``regmgr serve`` (e.g. ``("--keepalive", "3")``).
    """

    def __init__(self, net: Namespace, transport: str, count: int = 10,
                 probes: Optional[dict[str, float]] = None, server: tuple[str, ...] = ()) -> None:
        from .faultwatch import connection
        self.net = net
        self.registry = NamespacedRegistry(net, server)
        self.registry.start()
        self.owner: Optional[RegMgr] = None
        self.watcher: Optional[Watcher] = None
        try:
            spec = connection_spec(self.registry, transport, **(probes or {}))
            self.owner = RegMgr(connection(spec))
            self.services = [self.owner.attach(Service(f"svc{i}", {"kind": "fault", "n": i}))
                             for i in range(count)]
            self.watcher = Watcher(spec, {"kind": "fault"})
        except BaseException:
            self.close()
            raise

    def expected(self) -> dict[str, dict[str, str]]:
        return {svc.name: svc.attrs for svc in self.services}

    def whole(self) -> bool:
        """Every service listed as it is here, registered, and the Monitor's view equal."""
        assert self.watcher is not None
        try:
            index = self.registry.index()
        except OSError:
            return False
        return (index == self.expected() and self.watcher.view == index
                and not self.watcher.stale and all(svc.registered for svc in self.services))

    def lost(self) -> bool:
        """The owner and the watcher both noticed that the registry is gone."""
        assert self.owner is not None and self.watcher is not None
        return not self.owner.connected and self.watcher.stale

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        if self.owner is not None:
            self.owner.close()
        self.registry.kill()
