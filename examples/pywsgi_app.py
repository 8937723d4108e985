"""A plain WSGI app on gevent.pywsgi that registers itself and lists its peers.

Start a registry (``regmgr serve``) and run, from the repository root::

    python examples/pywsgi_app.py 8080
    curl http://127.0.0.1:8080/peers

It registers ``tcp!127.0.0.1!8080`` with ``proto http``; ``/peers`` answers
with every ``proto http`` service (itself included) as JSON, from a Monitor
that is kept current. Ctrl-C or SIGTERM unregisters it, then stops the
server. The registry is found through REGMGR_HOST, REGMGR_NEW_PORT,
REGMGR_FIND_PORT and REGMGR_EVENT_PORT (default 127.0.0.1, 6701-6703).
"""
import json
import os
import sys

from gevent.pywsgi import WSGIServer

from regmgr import TCP, Monitor, RegMgr
from regmgr.contrib.wsgi import serve_registered

REGISTRY = TCP(os.environ.get("REGMGR_HOST", "127.0.0.1"),
               new_port=int(os.environ.get("REGMGR_NEW_PORT", 6701)),
               find_port=int(os.environ.get("REGMGR_FIND_PORT", 6702)),
               event_port=int(os.environ.get("REGMGR_EVENT_PORT", 6703)))


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    with RegMgr(REGISTRY) as mgr:
        peers = mgr.attach(Monitor({"proto": "http"}))

        def app(environ, start_response):
            if environ["PATH_INFO"] != "/peers":
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"try /peers\n"]
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(peers.services).encode()]

        serve_registered(WSGIServer(("127.0.0.1", port), app), mgr, {"proto": "http"})


if __name__ == "__main__":
    main()
