"""Every CLI failure is one line on stderr and a non-zero exit, never a traceback.

A refused connection names the address and says what to do.
"""
import signal
import socket
import sys

import gevent
import pytest
from gevent import subprocess

from regmgr import cli


def refused_port():
    """A port of 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*args):
    result = subprocess.run([sys.executable, "-m", "regmgr", *args], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    return result.returncode, result.stderr


def assert_one_line(stderr):
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr


@pytest.mark.parametrize("transport", ["tcp", "styx"])
def test_find_with_no_registry_says_where_and_what_to_do(transport):
    port = str(refused_port())
    code, stderr = run("find", "--transport", transport, "--find-port", port, "--styx-port", port)
    assert code == 1
    assert_one_line(stderr)
    assert f"no registry at 127.0.0.1:{port} (connection refused)" in stderr
    assert "regmgr serve" in stderr and "--host" in stderr


def test_unregister_with_no_registry_says_where_and_what_to_do():
    port = str(refused_port())
    code, stderr = run("unregister", "svc", "--styx-port", port)
    assert code == 1
    assert_one_line(stderr)
    assert stderr.startswith(f"regmgr unregister: svc: no registry at 127.0.0.1:{port}")


@pytest.mark.parametrize("args", [
    ["nosuch"],
    ["find", "--bogus"],
    ["find", "--find-port", "70000"],
    ["find", "--find-port", "http"],
    ["find", "odd"],
    ["register", "a b", "proto", "http"],
    ["register", "svc", "odd"],
    ["serve", "--max-attrs", "0"],
    ["watch", "--settle", "soon"],
])
def test_bad_input_is_one_line(args):
    code, stderr = run(*args)
    assert code != 0
    assert_one_line(stderr)
    assert stderr.startswith("regmgr")


def test_serve_on_a_port_in_use_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        code, stderr = run("serve", "--new-port", port, "--find-port", "0", "--event-port", "0")
    assert code == 1
    assert "Traceback" not in stderr
    problems = [line for line in stderr.splitlines() if " INFO " not in line]  # the log goes on
    assert len(problems) == 1 and problems[0].startswith("regmgr serve: "), stderr


@pytest.mark.parametrize("command", [["register", "svc", "proto", "http"], ["watch", "proto", "http"]])
def test_waiting_for_a_registry_says_once_what_to_do(command):
    port = str(refused_port())
    proc = subprocess.Popen([sys.executable, "-m", "regmgr", *command, "--event-port", port],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        with gevent.Timeout(30):
            while True:
                line = proc.stderr.readline()
                assert line, "exited without the hint"
                if "no registry at" in line:
                    break
        assert line.startswith(f"regmgr {command[0]}: no registry at 127.0.0.1:{port} yet")
        assert "regmgr serve" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0
    assert "Traceback" not in rest


def test_an_unexpected_error_is_one_line_without_verbose(monkeypatch, capsys):
    class Broken:
        def find(self, attrs):
            raise RuntimeError("something no one expected")

    monkeypatch.setattr(cli, "_connection", lambda args: Broken())
    assert cli.main(["find"]) == 1
    err = capsys.readouterr().err
    assert err == "regmgr find: RuntimeError: something no one expected (-v shows where)\n"
    with pytest.raises(RuntimeError):
        cli.main(["find", "-v"])
