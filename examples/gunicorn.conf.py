"""gunicorn settings for flask_gunicorn.py: gevent workers, and the address registered.

GunicornHooks registers the address gunicorn listens on (``tcp!HOST!PORT``)
once, from the arbiter, so any number of workers share one entry; see
regmgr.contrib.wsgi for why not from each worker.
"""
import os

from regmgr import TCP
from regmgr.contrib.wsgi import GunicornHooks

worker_class = "gevent"
workers = 2

registration = GunicornHooks(
    TCP(os.environ.get("REGMGR_HOST", "127.0.0.1"),
        new_port=int(os.environ.get("REGMGR_NEW_PORT", 6701)),
        find_port=int(os.environ.get("REGMGR_FIND_PORT", 6702)),
        event_port=int(os.environ.get("REGMGR_EVENT_PORT", 6703))),
    {"proto": "http"},
)
when_ready = registration.when_ready
on_exit = registration.on_exit


def post_worker_init(worker):
    # gunicorn installs a worker's signal handlers only once the app is
    # loaded: a SIGTERM before this line waits for graceful_timeout.
    worker.log.info("worker %s ready", worker.pid)
