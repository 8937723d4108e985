"""A Flask app under gunicorn's gevent worker that registers itself and lists its peers.

Start a registry (``regmgr serve``) and run, from the repository root::

    gunicorn -c examples/gunicorn.conf.py -b 127.0.0.1:8000 --chdir examples flask_gunicorn:app
    curl http://127.0.0.1:8000/peers

gunicorn.conf.py registers ``tcp!127.0.0.1!8000`` with ``proto http`` once
gunicorn listens, and unregisters it as soon as gunicorn is told to stop.
``/peers`` answers with every ``proto http`` service (itself included) as
JSON, from a Monitor that each worker keeps current on its own connection.
The registry is found through REGMGR_HOST, REGMGR_NEW_PORT,
REGMGR_FIND_PORT and REGMGR_EVENT_PORT (default 127.0.0.1, 6701-6703).
"""
import os

from flask import Flask, jsonify

from regmgr import TCP, Monitor, RegMgr

REGISTRY = TCP(os.environ.get("REGMGR_HOST", "127.0.0.1"),
               new_port=int(os.environ.get("REGMGR_NEW_PORT", 6701)),
               find_port=int(os.environ.get("REGMGR_FIND_PORT", 6702)),
               event_port=int(os.environ.get("REGMGR_EVENT_PORT", 6703)))

# A gunicorn worker imports this module after its fork, so each worker gets
# its own manager (keep a reference: a dropped RegMgr closes itself).
manager = RegMgr(REGISTRY)
peers = manager.attach(Monitor({"proto": "http"}))

app = Flask(__name__)


@app.get("/peers")
def list_peers():
    """Every ``proto http`` service, ``{name: attrs}``."""
    return jsonify(peers.services)
