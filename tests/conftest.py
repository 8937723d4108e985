"""Shared fixtures. ``registry_server``/``registry_process`` come from regmgr.testing."""
import pytest

from regmgr.connections import TCP


def tcp_connection(server):
    return TCP(server.host, server.new_port, server.find_port, server.event_port)


# One entry per transport; every client test runs over each of them.
CONNECTIONS = {"tcp": tcp_connection}


@pytest.fixture(params=sorted(CONNECTIONS))
def connection_factory(request):
    """``make(server)``: a client connection to a RegistryServer or RegistryProcess."""
    return CONNECTIONS[request.param]
