"""GunicornHooks under a real gunicorn: each documented stop signal
(SIGTERM, SIGINT, SIGQUIT) unregisters before requests in flight are
drained and ends the keeper, over TCP and over Styx (whose connection
reaches the keeper by pickle)."""
import os
import re
import signal
import sys

import gevent
import pytest
from gevent import socket, subprocess

from serverutil import eventually

CONFIG = '''
import os
from regmgr import TCP, Styx
from regmgr.contrib.wsgi import GunicornHooks

worker_class = "sync"
workers = 1
graceful_timeout = 60
host = os.environ["REGMGR_HOST"]
if os.environ["REGMGR_TRANSPORT"] == "styx":
    connection = Styx(host, int(os.environ["REGMGR_STYX_PORT"]))
else:
    connection = TCP(host, new_port=int(os.environ["REGMGR_NEW_PORT"]),
                     find_port=int(os.environ["REGMGR_FIND_PORT"]),
                     event_port=int(os.environ["REGMGR_EVENT_PORT"]))
registration = GunicornHooks(connection, {"proto": "http"})
when_ready = registration.when_ready
on_exit = registration.on_exit


def post_worker_init(worker):
    worker.log.info("worker %s ready", worker.pid)
'''

# /slow says it started (a file), then answers once the test lets it (another
# file), even through a quick shutdown's SystemExit: so gunicorn's arbiter
# stays up, before on_exit, until the test has checked the registry.
APP = '''
import os
import time

STARTED = os.environ["SLOW_STARTED"]
GO = os.environ["SLOW_GO"]


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        open(STARTED, "w").close()
        while True:
            try:
                if os.path.exists(GO):
                    break
                time.sleep(0.01)
            except SystemExit:
                pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''

STOP_SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Gunicorn:
    """gunicorn with the config above, its log in a file."""

    def __init__(self, registry, transport, tmp_path):
        (tmp_path / "keeper_conf.py").write_text(CONFIG)
        (tmp_path / "keeper_app.py").write_text(APP)
        self.port = free_port()
        self.name = f"tcp!127.0.0.1!{self.port}"
        self.slow_started = tmp_path / "slow_started"
        self.slow_go = tmp_path / "slow_go"
        env = dict(os.environ, REGMGR_TRANSPORT=transport, REGMGR_HOST=registry.host,
                   REGMGR_NEW_PORT=str(registry.new_port),
                   REGMGR_FIND_PORT=str(registry.find_port),
                   REGMGR_EVENT_PORT=str(registry.event_port),
                   REGMGR_STYX_PORT=str(registry.styx_port),
                   SLOW_STARTED=str(self.slow_started), SLOW_GO=str(self.slow_go),
                   XDG_RUNTIME_DIR=str(tmp_path))  # gunicorn's control socket goes there
        self.logfile = tmp_path / "gunicorn.log"
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "keeper_conf.py",
                 "-b", f"127.0.0.1:{self.port}", "keeper_app:app"],
                cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def log(self):
        return self.logfile.read_text(errors="replace")

    def logged(self, pattern):
        return [int(pid) for pid in re.findall(pattern, self.log())]

    def wait_until(self, predicate, timeout=20.0):
        def holds():
            if self.proc.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            return predicate()
        try:
            eventually(holds, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"condition never held: {predicate}\n{self.log()}") from None

    def started(self, registry):
        """Wait until the worker is ready and the keeper has registered; the keeper's pid."""
        self.wait_until(lambda: self.logged(r"worker (\d+) ready"))
        self.wait_until(lambda: self.name in registry.index())
        assert registry.index()[self.name] == {"proto": "http"}
        [keeper] = self.logged(r"regmgr: keeper \(pid: (\d+)\)")
        return keeper

    def exits_cleanly(self):
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(self.log()) from None
        assert code == 0, self.log()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def registry():
    from regmgr.testing import RegistryProcess

    with RegistryProcess() as process:
        yield process


@pytest.fixture
def start(registry, tmp_path):
    started = []

    def run(transport):
        server = Gunicorn(registry, transport, tmp_path)
        started.append(server)
        return server

    yield run
    for server in started:
        server.kill()


@pytest.mark.parametrize("transport", ["tcp", "styx"])
@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_each_stop_signal_unregisters_before_draining(registry, start, transport, signum):
    """The name goes while a request is still in flight (so before ``on_exit``,
    which runs once the workers are gone), then the keeper leaves."""
    server = start(transport)
    keeper = server.started(registry)
    assert running(keeper)
    client = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    with client:
        client.sendall(b"GET /slow HTTP/1.0\r\n\r\n")
        server.wait_until(server.slow_started.exists)
        server.proc.send_signal(signum)
        eventually(lambda: server.name not in registry.index(), timeout=10)
        assert server.proc.poll() is None and not server.slow_go.exists()  # still draining
        server.slow_go.touch()
        with gevent.Timeout(30):
            reply = b"".join(iter(lambda: client.recv(4096), b""))
    if signum == signal.SIGTERM:  # graceful: the request in flight is answered
        assert reply.startswith(b"HTTP/1.0 200 OK"), reply
    server.exits_cleanly()
    eventually(lambda: not running(keeper), timeout=10)
    assert "Traceback" not in server.log(), server.log()
