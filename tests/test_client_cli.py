"""The client subcommands: register, find, watch and demo, as a user runs them."""
import signal
import sys

import gevent
import pytest
from gevent import subprocess

from regmgr import Service
from regmgr.cli import main
from regmgr.wire import parse_services
from serverutil import eventually


def ports(server):
    return ["--host", server.host, "--new-port", str(server.new_port),
            "--find-port", str(server.find_port), "--event-port", str(server.event_port)]


def regmgr(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "regmgr", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def readline(stream, timeout=10):
    with gevent.Timeout(timeout):
        return stream.readline()


def test_find_prints_like_regquery(manager, registry_server, capsys):
    web = manager.attach(Service("web", {"proto": "http", "note": "a b"}))
    manager.attach(Service("ssh", {"proto": "ssh"}))
    eventually(lambda: len(registry_server.index()) == 2 and web.registered)
    assert main(["find", *ports(registry_server), "proto", "http"]) == 0
    out = capsys.readouterr().out
    assert "'a b'" in out and parse_services(out) == {"web": {"proto": "http", "note": "a b"}}
    assert main(["find", "-n", *ports(registry_server), "proto", "*"]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == ["ssh", "web"]


def test_find_without_a_registry_fails_cleanly(registry_server, capsys):
    args = ports(registry_server)
    registry_server.stop()
    assert main(["find", *args]) == 1
    assert capsys.readouterr().err.startswith("regmgr find: no registry at 127.0.0.1")


def test_odd_pairs_are_refused(registry_server):
    with pytest.raises(SystemExit, match="odd attribute/value pairs"):
        main(["find", *ports(registry_server), "proto"])


def test_register_survives_a_restart_and_unregisters_on_sigint(registry_server):
    proc = regmgr("register", "cli!svc", "proto", "http", *ports(registry_server))
    log = []
    reader = gevent.spawn(lambda: log.extend(iter(proc.stderr.readline, "")))

    def registered(times):
        return sum("service 'cli!svc': registered" in line for line in log) == times

    try:
        eventually(lambda: registered(1), timeout=10)
        assert registry_server.index() == {"cli!svc": {"proto": "http"}}
        registry_server.restart()
        eventually(lambda: registered(2), timeout=10)
        assert registry_server.index() == {"cli!svc": {"proto": "http"}}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        eventually(lambda: registry_server.index() == {})
    finally:
        proc.kill()
        proc.wait()
        reader.kill()


def test_register_refuses_a_bad_name(registry_server):
    proc = regmgr("register", "a/b", *ports(registry_server))
    assert proc.wait(timeout=10) == 2
    assert "bad character in service name" in proc.stderr.read()


def test_watch_prints_changes(manager, registry_server):
    proc = regmgr("watch", "proto", "*", "--settle", "0", *ports(registry_server))
    log = []
    reader = gevent.spawn(lambda: log.extend(iter(proc.stderr.readline, "")))
    try:
        eventually(lambda: any("view current" in line for line in log), timeout=10)
        web = manager.attach(Service("web", {"proto": "http"}))
        assert readline(proc.stdout) == "+ web proto http\n"
        web.update({"proto": "https"})
        assert readline(proc.stdout) == "~ web proto https\n"
        manager.detach(web)
        assert readline(proc.stdout) == "- web proto https\n"
    finally:
        proc.kill()
        proc.wait()
        reader.kill()


def test_demo_runs_by_itself():
    proc = regmgr("demo")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "every service is back" in out and out.rstrip().endswith("# done")
    for line in ("+ tcp!127.0.0.1!2222 proto ssh", "~ tcp!127.0.0.1!8080",
                 "- tcp!127.0.0.1!2222 proto ssh"):
        assert line in out
    assert out.count("\n+ ") == 3 and out.count("\n- ") == 1
