"""The command line over Styx: --transport styx, unregister, serve --styx-port."""
import signal
import sys

import pytest
from gevent import subprocess

from regmgr import Styx
from regmgr.cli import main
from regmgr.testing import RegistryProcess
from regmgr.wire import parse_services
from serverutil import eventually


def styx_args(server, user="none"):
    return ["--host", server.host, "--styx-port", str(server.styx_port), "--user", user]


def test_find_over_styx(registry_server, capsys):
    reg = Styx(registry_server.host, registry_server.styx_port).open_new("web", {"proto": "http"})
    assert main(["find", "--transport", "styx", *styx_args(registry_server), "proto", "*"]) == 0
    assert parse_services(capsys.readouterr().out) == {"web": {"proto": "http"}}
    reg.close()


def test_register_over_styx_then_unregister_the_persistent_service(registry_server, capsys):
    proc = subprocess.Popen(
        [sys.executable, "-m", "regmgr", "register", "kept", "persist", "1",
         "--transport", "styx", *styx_args(registry_server, "alice")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: registry_server.index() == {"kept": {"persist": "1"}}, timeout=10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert registry_server.index() == {"kept": {"persist": "1"}}  # persist outlives its owner

    assert main(["unregister", "kept", *styx_args(registry_server, "bob")]) == 1
    assert capsys.readouterr().err == "regmgr unregister: kept: permission denied\n"
    assert main(["unregister", "kept", "--transport", "styx",
                 *styx_args(registry_server, "alice")]) == 0
    assert registry_server.index() == {}
    assert main(["unregister", "kept", *styx_args(registry_server, "alice")]) == 1
    assert "file does not exist" in capsys.readouterr().err


def test_unregister_as_the_readme_writes_it(registry_server):
    """``regmgr unregister NAME --transport styx --user USER``, run as a program."""
    Styx(registry_server.host, registry_server.styx_port, user="alice").open_new(
        "kept", {"persist": "1"}).close()
    assert registry_server.index() == {"kept": {"persist": "1"}}
    done = subprocess.run(
        [sys.executable, "-m", "regmgr", "unregister", "kept", "--transport", "styx",
         "--user", "alice", "--host", registry_server.host,
         "--styx-port", str(registry_server.styx_port)],
        capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stderr) == (0, "")
    assert registry_server.index() == {}


def test_unregister_refuses_the_tcp_transport(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["unregister", "x", "--transport", "tcp"])
    assert exit_.value.code == 2
    assert "invalid choice: 'tcp'" in capsys.readouterr().err


def test_unregister_without_a_registry_fails_cleanly(registry_server, capsys):
    args = styx_args(registry_server)
    registry_server.stop()
    assert main(["unregister", "x", *args]) == 1
    assert capsys.readouterr().err.startswith("regmgr unregister: x: no registry at 127.0.0.1")


def test_serve_logs_the_styx_port_only_when_serving_it():
    with RegistryProcess(styx_port=None) as plain:
        assert plain.styx_port is None and ", styx" not in plain.output
    with RegistryProcess() as both:
        assert f"event {both.event_port}, styx {both.styx_port}" in both.output
