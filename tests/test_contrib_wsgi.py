"""regmgr.contrib.wsgi in this process: names, validation, serve_registered's order."""
import os
import signal
import socket

import gevent
import pytest
from gevent.pywsgi import WSGIServer

from regmgr import TCP, RegMgr
from regmgr.contrib.wsgi import GunicornHooks, dial_address, serve_registered
from serverutil import eventually


def test_dial_address():
    assert dial_address(("127.0.0.1", 8080)) == "tcp!127.0.0.1!8080"
    assert dial_address(("::1", 8080, 0, 0)) == "tcp!::1!8080"


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::", ""])
def test_dial_address_replaces_a_wildcard_host(wildcard):
    assert dial_address((wildcard, 80)) == f"tcp!{socket.gethostname()}!80"


def test_dial_address_refuses_a_unix_socket():
    with pytest.raises(ValueError):
        dial_address("/run/app.sock")


def test_gunicorn_hooks_validate_in_the_config_file():
    with pytest.raises(ValueError, match="bad character in service name"):
        GunicornHooks(TCP("127.0.0.1"), name="tcp!a b!80")
    with pytest.raises(TypeError):
        GunicornHooks(TCP("127.0.0.1"), {"proto": ["http"]})


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


class Server(WSGIServer):
    """Notes which tasks its manager still had when it was told to stop."""

    def __init__(self, mgr):
        super().__init__(("127.0.0.1", 0), app, log=None)
        self.mgr = mgr
        self.tasks_at_stop = None

    def stop(self, timeout=None):
        self.tasks_at_stop = self.mgr.tasks
        super().stop(timeout)


def test_serve_registered_names_port_0_and_unregisters_before_stopping(registry_server):
    mgr = RegMgr(TCP(registry_server.host, registry_server.new_port,
                     registry_server.find_port, registry_server.event_port))
    server = Server(mgr)
    serving = gevent.spawn(serve_registered, server, mgr, {"proto": "http"},
                           stop_signals=[signal.SIGUSR1])
    eventually(lambda: server.started and dial_address(server.address) in registry_server.index())
    name = dial_address(server.address)
    assert name != "tcp!127.0.0.1!0"
    assert registry_server.index()[name] == {"proto": "http"}

    os.kill(os.getpid(), signal.SIGUSR1)
    serving.get(timeout=5)
    assert server.tasks_at_stop == []  # unregistered before the listener closed
    assert not server.started
    eventually(lambda: name not in registry_server.index(), timeout=1)
    mgr.close()
