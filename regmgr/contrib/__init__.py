"""Ready-made glue between regmgr and the servers programs run under.

* :mod:`regmgr.contrib.wsgi`: advertise a WSGI server (gunicorn,
  ``gevent.pywsgi``) in the registry for exactly as long as it listens.

Each module imports only the standard library, gevent and regmgr, never
the server it helps, so importing one costs nothing extra.
"""
