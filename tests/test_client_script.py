"""A plain blocking script, monkey-patched by gevent, uses regmgr as is."""
import sys
import textwrap

from gevent import subprocess

from serverutil import eventually

SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()

    import os
    import sys
    import time

    from regmgr import TCP, RegMgr, Service

    host, ports = sys.argv[1], [int(port) for port in sys.argv[2:5]]
    with RegMgr(TCP(host, *ports)) as mgr:
        svc = mgr.attach(Service("script", {"pid": os.getpid()}))
        while not svc.registered:
            time.sleep(0.01)
        print("registered", flush=True)
        sys.stdin.readline()
        print(sorted(mgr.lookup({"pid": "*"}, timeout=5)), flush=True)
""")


def test_monkey_patched_script_registers_and_is_found(registry_server):
    server = registry_server
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, server.host,
         str(server.new_port), str(server.find_port), str(server.event_port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "registered\n"
        assert registry_server.index() == {"script": {"pid": str(proc.pid)}}
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "['script']\n"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    eventually(lambda: registry_server.index() == {})
