"""10,000 services through one Styx session against ``regmgr serve``, through a SIGKILL."""
import time

import gevent
from gevent.pool import Pool

from regmgr import Styx
from regmgr.testing import open_sockets

COUNT = 10_000


def register_all(conn):
    pool = Pool(500)
    return pool.map(lambda i: conn.open_new(f"bulk!{i}", {"kind": "bulk", "n": str(i)}),
                    range(COUNT))


def test_ten_thousand_services_one_session_sigkill_and_restore(registry_process, hub_errors):
    hub_errors.expect(ConnectionError)  # how each waiter ends at the SIGKILL
    conn = Styx(registry_process.host, registry_process.styx_port)
    sockets = open_sockets()
    started = time.monotonic()
    regs = register_all(conn)
    registered = time.monotonic() - started
    assert open_sockets() == sockets + 1  # one session carries all of them
    found = conn.find({"kind": "bulk"})
    assert len(found) == COUNT and found["bulk!1234"] == {"kind": "bulk", "n": "1234"}

    waiters = [gevent.spawn(reg.wait) for reg in regs]
    registry_process.kill()
    gevent.joinall(waiters, timeout=5)
    assert all(isinstance(w.exception, ConnectionError) for w in waiters)  # all at once
    for reg in regs:
        reg.close()

    registry_process.start()  # same ports, empty
    assert conn.find() == {}
    started = time.monotonic()
    regs = register_all(conn)
    restored = time.monotonic() - started
    assert len(conn.find({"kind": "bulk"})) == COUNT
    assert open_sockets() == sockets + 1
    for reg in regs:
        reg.close()
    print(f"\n{COUNT} services over one Styx session: registered in {registered:.2f} s, "
          f"again after SIGKILL and restart in {restored:.2f} s")
