"""The autouse ``hub_errors`` fixture sees every greenlet that dies, server handlers included."""
import gevent
import gevent.event
import gevent.server
import gevent.socket

from conftest import HubErrors
from regmgr.testing import RegistryProcess
from serverutil import eventually


def boom(*_):
    raise ValueError("boom")


def test_a_dying_greenlet_is_recorded(hub_errors):
    gevent.spawn(boom).join()
    assert [type(value) for _, _, value, _ in hub_errors.errors] == [ValueError]
    hub_errors.errors.clear()  # seen: not a failure of this test


def test_a_stream_server_handler_that_raises_is_recorded(hub_errors):
    server = gevent.server.StreamServer(("127.0.0.1", 0), boom)
    server.start()
    try:
        with gevent.socket.create_connection(server.address, timeout=5):
            eventually(lambda: hub_errors.errors)
    finally:
        server.stop()
    assert str(hub_errors.errors[0][2]) == "boom"
    hub_errors.errors.clear()


def test_expected_errors_must_happen_and_match():
    errors = HubErrors()
    errors.expect(ValueError, match="boo")
    assert len(errors.problems()) == 1  # never happened
    errors.record(None, ValueError, ValueError("boom"), None)
    assert errors.problems() == []
    errors.record(None, KeyError, KeyError("other"), None)
    assert "KeyError" in errors.problems()[0]


def test_a_registry_child_traceback_is_collected():
    class Child:
        stderr = [b"registry listening on 127.0.0.1: new 1, find 2, event 3\n",
                  b"Traceback (most recent call last):\n", b'  File "x.py", line 1\n',
                  b"ValueError: bad\n", b"later line\n"]

    process = RegistryProcess()
    ready = gevent.event.AsyncResult()
    process._drain(Child(), ready)
    assert ready.get(timeout=0) == (1, 2, 3, None)
    assert process.tracebacks == ["Traceback (most recent call last):\n"
                                  '  File "x.py", line 1\nValueError: bad\n']
