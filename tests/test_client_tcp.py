"""What only the TCP transport does: its arguments and misbehaving peers."""
import gevent
import pytest
from gevent.server import StreamServer

from regmgr.connections import TCP
from regmgr.errors import ProtocolError


@pytest.fixture
def peer():
    """``serve(reply)``: a port whose every connection gets ``reply`` then EOF.

    With ``request`` it reads the client's line first (as the find port does).
    """
    servers = []

    def serve(reply: bytes, close: bool = True, request: bool = False) -> int:
        def handle(sock, address):
            if request:
                sock.recv(65536)
            sock.sendall(reply)
            if not close:
                gevent.sleep(30)

        server = StreamServer(("127.0.0.1", 0), handle)
        server.start()
        servers.append(server)
        return server.server_port

    yield serve
    for server in servers:
        server.stop(timeout=0)


def test_host_is_required():
    with pytest.raises(TypeError):
        TCP(None)
    assert TCP("h").new_port == 6701 and TCP("h").find_port == 6702 and TCP("h").event_port == 6703


def test_nothing_listening_is_a_connection_error(registry_server):
    conn = TCP("127.0.0.1", registry_server.new_port, registry_server.find_port,
               registry_server.event_port)
    registry_server.stop()
    with pytest.raises(ConnectionError, match="find 127.0.0.1"):
        conn.find()


@pytest.mark.parametrize("reply, error, match", [
    (b"HELLO\n", ProtocolError, "expected READY"),  # a peer that is not the gateway
    (b"", ConnectionError, "closed by the registry"),  # a registry going away
    (b"READY", ConnectionError, "closed by the registry"),  # ... in the middle of the line
])
def test_event_greeting_must_be_ready(peer, reply, error, match):
    conn = TCP("127.0.0.1", event_port=peer(reply), connect_timeout=1)
    with pytest.raises(error, match=match):
        conn.open_event()


@pytest.mark.parametrize("reply", [b"READY\nnot a number\n", b"READY\n" + b"1" * 2000])
def test_bad_event_lines_are_protocol_errors(peer, reply):
    stream = TCP("127.0.0.1", event_port=peer(reply, close=False)).open_event()
    with pytest.raises(ProtocolError):
        stream.wait()
    stream.close()


def test_event_versions_are_parsed(peer):
    stream = TCP("127.0.0.1", event_port=peer(b"READY\n00000042\n00000043\n")).open_event()
    assert [stream.wait(), stream.wait()] == [42, 43]
    with pytest.raises(ConnectionError):
        stream.wait()


@pytest.mark.parametrize("reply", [b"svc a 1", b"svc a\n", b"svc 'a\n", b"\xff\n"])
def test_bad_find_replies_are_protocol_errors(peer, reply):
    with pytest.raises(ProtocolError):
        TCP("127.0.0.1", find_port=peer(reply, request=True)).find()


def test_find_reply_is_capped(peer):
    with pytest.raises(ProtocolError, match="reply over"):
        TCP("127.0.0.1", find_port=peer(b"s a b\n" * 200_000, request=True)).find()


def test_silent_find_times_out(peer):
    conn = TCP("127.0.0.1", find_port=peer(b"", close=False), connect_timeout=0.2)
    with pytest.raises(ConnectionError):
        conn.find()
