"""Shared fixtures. ``registry_server``/``registry_process`` come from regmgr.testing."""
import re
import traceback

import gevent.hub
import pytest

from regmgr import TCP, RegMgr, Styx
from regmgr.testing import RegistryProcess

# The stores' fixtures: a ZooKeeper ensemble, and registry_server over each store.
pytest_plugins = ["zkutil"]


class HubErrors:
    """Errors the gevent hub reported during one test, and the ones it expects.

    gevent prints an exception that kills a greenlet (a StreamServer handler
    included) and carries on, so without this a test passes while its server
    side crashed on every connection.
    """

    def __init__(self):
        self.errors = []  # (context, exception)
        self._expected = []  # [exception type, compiled pattern or None, times seen]

    def expect(self, exc_type, match=None):
        """Allow ``exc_type`` (its text matching ``match``); it must occur at least once."""
        self._expected.append([exc_type, None if match is None else re.compile(match), 0])

    def record(self, context, exc_type, value, tb):
        self.errors.append((context, exc_type, value, tb))

    def _is_expected(self, exc_type, value):
        for entry in self._expected:
            etype, pattern, _ = entry
            if issubclass(exc_type, etype) and (pattern is None or pattern.search(str(value))):
                entry[2] += 1
                return True
        return False

    def problems(self):
        """A text for every unexpected error and every expectation never met."""
        out = []
        for context, exc_type, value, tb in self.errors:
            if not self._is_expected(exc_type, value):
                text = "".join(traceback.format_exception(exc_type, value, tb))
                out.append(f"greenlet {context!r} died:\n{text}")
        for etype, pattern, seen in self._expected:
            if not seen:
                out.append(f"expected hub error {etype.__name__}"
                           f"{'' if pattern is None else ' matching ' + pattern.pattern}"
                           " never happened")
        return out


@pytest.fixture(autouse=True)
def hub_errors(monkeypatch):
    """Fail the test on any error the gevent hub reports, here or in a registry child.

    ``hub_errors.expect(Type, match=...)`` declares a deliberately provoked one.
    Child ``regmgr serve`` processes started through RegistryProcess must log
    no traceback either.
    """
    recorder = HubErrors()
    original = gevent.hub.Hub.print_exception

    def print_exception(hub, context, exc_type, value, tb):
        recorder.record(context, exc_type, value, tb)
        return original(hub, context, exc_type, value, tb)

    processes = []
    original_start = RegistryProcess.start

    def start(process):
        processes.append(process)
        return original_start(process)

    monkeypatch.setattr(gevent.hub.Hub, "print_exception", print_exception)
    monkeypatch.setattr(RegistryProcess, "start", start)
    yield recorder
    gevent.sleep(0)  # let greenlets that were just woken report
    problems = recorder.problems()
    for process in dict.fromkeys(processes):
        problems += [f"registry child logged:\n{text}" for text in process.tracebacks]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def tcp_connection(server):
    return TCP(server.host, new_port=server.new_port, find_port=server.find_port,
               event_port=server.event_port)


def styx_connection(server):
    return Styx(server.host, server.styx_port)


# One entry per transport; every client test runs over each of them.
CONNECTIONS = {"tcp": tcp_connection, "styx": styx_connection}


@pytest.fixture(params=sorted(CONNECTIONS))
def connection_factory(request):
    """``make(server)``: a client connection to a RegistryServer or RegistryProcess."""
    return CONNECTIONS[request.param]


@pytest.fixture
def manager_factory(connection_factory):
    """``make(server)``: a RegMgr on ``server``, closed at teardown."""
    managers = []

    def make(server, **kwargs):
        mgr = RegMgr(connection_factory(server), **kwargs)
        managers.append(mgr)
        return mgr

    yield make
    for mgr in managers:
        mgr.close()


@pytest.fixture
def manager(manager_factory, registry_server):
    """A connected RegMgr on the in-process registry."""
    mgr = manager_factory(registry_server)
    assert mgr.wait_connected(5)
    return mgr
