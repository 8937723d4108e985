"""A plain blocking script: registers itself, then looks up its peers every few seconds.

Start a registry (``regmgr serve``) and run, from the repository root::

    python examples/blocking_script.py 'worker!1'

It registers ``worker!1`` with ``role worker``, prints its peers (every other
``role worker`` service) as one JSON line every 5 s, and stays registered,
through registry restarts, until Ctrl-C or SIGTERM. The registry is found through
REGMGR_HOST, REGMGR_NEW_PORT, REGMGR_FIND_PORT and REGMGR_EVENT_PORT
(default 127.0.0.1, 6701-6703).
"""
from gevent import monkey

monkey.patch_all()  # first: so time.sleep() below lets regmgr's greenlets run

import json
import os
import signal
import sys
import time

from regmgr import TCP, RegMgr, Service

REGISTRY = TCP(os.environ.get("REGMGR_HOST", "127.0.0.1"),
               new_port=int(os.environ.get("REGMGR_NEW_PORT", 6701)),
               find_port=int(os.environ.get("REGMGR_FIND_PORT", 6702)),
               event_port=int(os.environ.get("REGMGR_EVENT_PORT", 6703)))


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else f"worker!{os.getpid()}"
    # SIGTERM exits like Ctrl-C, through the `with` below, which unregisters.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with RegMgr(REGISTRY) as mgr:
        mgr.attach(Service(name, {"role": "worker"}))
        while True:
            peers = mgr.lookup({"role": "worker"})  # waits while the registry is away
            peers.pop(name, None)
            print(json.dumps(peers), flush=True)
            time.sleep(5)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
