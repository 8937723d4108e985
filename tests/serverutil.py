"""Raw-socket helpers for talking to the gateway the way a foreign client would."""
import gevent
import gevent.event
import gevent.server
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


def spawn_blocked(fn, *args):
    """Spawn ``fn(*args)`` and return once it has run up to its first block."""
    greenlet = gevent.spawn(fn, *args)
    gevent.sleep(0)  # callbacks run in order: the new greenlet first, until it blocks
    return greenlet


class Relay:
    """A TCP relay to a local port whose client-to-server bytes can be held back.

    ``hold()`` keeps what clients send from reaching the server (counted in
    ``held``) until ``release()``: a slow network, on real sockets.
    """

    def __init__(self, port, host="127.0.0.1"):
        self.target = (host, port)
        self.held = 0
        self._open = gevent.event.Event()
        self._open.set()
        self._server = gevent.server.StreamServer((host, 0), self._handle)
        self._server.start()
        self.port = self._server.server_port

    def hold(self):
        self._open.clear()

    def release(self):
        self._open.set()

    def stop(self):
        self._open.set()
        self._server.stop(timeout=1)

    def _handle(self, client, address):
        try:
            upstream = gevent.socket.create_connection(self.target, timeout=5)
        except OSError:  # the server is gone (a test's teardown): so is this client
            client.close()
            return
        upstream.settimeout(None)
        back = gevent.spawn(self._pump, upstream, client, False)
        try:
            self._pump(client, upstream, True)
        finally:
            back.kill()

    def _pump(self, src, dst, gated):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if gated and not self._open.is_set():
                    self.held += len(data)
                    self._open.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            src.close()
            dst.close()
