"""Raw-socket helpers for talking to the gateway the way a foreign client would."""
import gevent
import gevent.socket

from regmgr.wire import parse_services


def connect(port, host="127.0.0.1"):
    return gevent.socket.create_connection((host, port), timeout=5)


def register(server, data: bytes):
    """Open the new port and send ``data`` in one send; return the socket."""
    sock = connect(server.new_port)
    sock.sendall(data)
    return sock


def find_raw(server, data: bytes = b"\n", half_close=False) -> bytes:
    with connect(server.find_port) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(gevent.socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def find(server, filter_line: str = ""):
    return parse_services(find_raw(server, filter_line.encode() + b"\n").decode())


def closed_by_server(sock, timeout=5.0) -> bool:
    """True when the server closes ``sock`` within ``timeout`` (it sends nothing)."""
    try:
        with gevent.Timeout(timeout):
            return sock.recv(1) == b""
    except gevent.Timeout:
        return False
    except OSError:
        return True


def eventually(predicate, timeout=5.0, interval=0.01):
    """Poll ``predicate`` until true; fail the test if it never is."""
    with gevent.Timeout(timeout, AssertionError(f"condition never held: {predicate}")):
        while not predicate():
            gevent.sleep(interval)
