"""Shared fixtures. ``registry_server``/``registry_process`` come from regmgr.testing."""
import pytest

from regmgr import TCP, RegMgr, Styx


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
