"""The examples, run for real as their docstrings say, against a registry child process.

Each one must be registered while it runs, answer for its peers, and be
gone from the registry within a second of SIGTERM.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from regmgr import TCP
from regmgr.testing import RegistryProcess

ROOT = Path(__file__).resolve().parent.parent
UNREGISTER_LIMIT = 1.0


@pytest.fixture(scope="module")
def registry():
    with RegistryProcess() as process:
        yield process


@pytest.fixture
def peer(registry):
    """Another ``proto http`` / ``role worker`` service, registered for the test."""
    registration = TCP(registry.host, registry.new_port, registry.find_port, registry.event_port
                       ).open_new("tcp!127.0.0.1!9", {"proto": "http", "role": "worker"})
    yield registration.name
    registration.close()


class Example:
    """One example running as a child process, its output in files."""

    def __init__(self, registry, tmp_path, *args):
        env = dict(os.environ, REGMGR_HOST=registry.host,
                   REGMGR_NEW_PORT=str(registry.new_port), REGMGR_FIND_PORT=str(registry.find_port),
                   REGMGR_EVENT_PORT=str(registry.event_port),
                   XDG_RUNTIME_DIR=str(tmp_path))  # gunicorn's control socket goes there
        self.stdout = tmp_path / "stdout"
        self.stderr = tmp_path / "stderr"
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def log(self):
        return self.stderr.read_text(errors="replace")

    def wait_until(self, predicate, timeout=15.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                pytest.fail(f"example exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"condition never held: {predicate}\n{self.log()}")
            time.sleep(0.02)

    def terminate(self, registry, name):
        """SIGTERM; return how long ``name`` stayed registered after it."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        while name in registry.index() and time.monotonic() - start < 5:
            time.sleep(0.005)
        gone_after = time.monotonic() - start
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError(self.log()) from None
        assert code == 0, self.log()
        assert "Traceback" not in self.log(), self.log()  # no greenlet died on the way
        return gone_after

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def run(registry, tmp_path):
    started = []

    def start(*args):
        example = Example(registry, tmp_path, *args)
        started.append(example)
        return example

    yield start
    for example in started:
        example.kill()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.load(response)


def check_http_example(registry, example, port, peer):
    """Registered, /peers lists the peer and itself, unregistered promptly on SIGTERM."""
    name = f"tcp!127.0.0.1!{port}"
    example.wait_until(lambda: name in registry.index())
    assert registry.index()[name] == {"proto": "http"}
    url = f"http://127.0.0.1:{port}/peers"
    example.wait_until(lambda: {peer, name} <= set(get_json(url)))
    assert get_json(url)[peer] == {"proto": "http", "role": "worker"}
    assert example.terminate(registry, name) < UNREGISTER_LIMIT
    assert name not in registry.index()


def pids_logged(log, pattern):
    return [int(pid) for pid in re.findall(pattern, log)]


def running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:  # gone meanwhile, or no /proc: kill() said it exists
        return not os.path.exists("/proc/self")


def wait_gone(pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [pid for pid in pids if running(pid)]


def gunicorn(run, port):
    return run("-m", "gunicorn", "-c", "examples/gunicorn.conf.py", "-b", f"127.0.0.1:{port}",
               "--chdir", "examples", "flask_gunicorn:app")


def test_pywsgi_app(registry, run, peer):
    port = free_port()
    check_http_example(registry, run("examples/pywsgi_app.py", str(port)), port, peer)


def test_flask_gunicorn_two_workers_one_registration(registry, run, peer):
    port = free_port()
    example = gunicorn(run, port)
    # A worker still loading the app ignores SIGTERM (gunicorn's own race),
    # so stop only once both are ready.
    example.wait_until(lambda: len(pids_logged(example.log(), r"worker (\d+) ready")) == 2)
    check_http_example(registry, example, port, peer)
    log = example.log()
    assert len(pids_logged(log, r"Booting worker with pid: (\d+)")) == 2
    keepers = pids_logged(log, r"regmgr: keeper \(pid: (\d+)\)")
    assert len(keepers) == 1 and not wait_gone(keepers)
    assert "duplicate" not in log


def test_flask_gunicorn_arbiter_killed(registry, run, peer):
    """A SIGKILLed arbiter cannot clean up: its keeper notices and unregisters."""
    port = free_port()
    name = f"tcp!127.0.0.1!{port}"
    example = gunicorn(run, port)
    example.wait_until(lambda: name in registry.index())
    example.wait_until(lambda: peer in get_json(f"http://127.0.0.1:{port}/peers"))
    workers = pids_logged(example.log(), r"Booting worker with pid: (\d+)")
    example.proc.kill()
    start = time.monotonic()
    while name in registry.index() and time.monotonic() - start < 5:
        time.sleep(0.005)
    assert time.monotonic() - start < UNREGISTER_LIMIT
    # The orphaned workers leave by themselves too.
    assert workers and not wait_gone(workers)
    assert name not in registry.index()


def test_blocking_script(registry, run, peer):
    name = "worker!test"
    example = run("examples/blocking_script.py", name)
    example.wait_until(lambda: name in registry.index())
    assert registry.index()[name] == {"role": "worker"}
    example.wait_until(lambda: example.stdout.read_text().count("\n") >= 1)
    first = json.loads(example.stdout.read_text().splitlines()[0])
    assert first == {peer: {"proto": "http", "role": "worker"}}
    assert example.terminate(registry, name) < UNREGISTER_LIMIT
    assert name not in registry.index()
