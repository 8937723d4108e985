"""``regmgr serve`` as a user runs it: foreground, logs, clean stop, clear errors."""
import signal
import subprocess
import sys

import gevent.socket
import pytest

from regmgr.testing import RegistryProcess

from serverutil import closed_by_server, eventually, find, register


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_signal(sig):
    with RegistryProcess() as process:
        sock = register(process, b"s a 1\n")
        eventually(lambda: "s" in find(process))
        process.proc.send_signal(sig)
        assert process.proc.wait(timeout=10) == 0
        assert closed_by_server(sock)
        assert "registered 's'" in process.output
        assert "registry stopped" in process.output


def test_serve_refuses_a_taken_port():
    with gevent.socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "regmgr", "serve", "--new-port", "0", "--find-port", str(port),
             "--event-port", "0"],
            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("regmgr serve: cannot listen on 127.0.0.1:%d (find port)" % port)
    assert "Traceback" not in result.stderr


def test_serve_reports_a_bad_database(tmp_path):
    db = tmp_path / "bad.db"
    db.write_text("service=x\n  v='open\n")
    result = subprocess.run(
        [sys.executable, "-m", "regmgr", "serve", "--new-port", "0", "--find-port", "0",
         "--event-port", "0", "-f", str(db)],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == \
        f"regmgr serve: {db}:2: unterminated quote in value of 'v'"
