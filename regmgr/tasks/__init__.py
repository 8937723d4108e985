"""Tasks: what a RegMgr keeps running while it is connected.

A task is anything with ``start()``, ``stop()``, ``refresh()`` and a
``manager`` attribute (the :class:`Task` protocol); the manager calls them
from its supervisor greenlet:

* ``attach`` sets ``manager``; ``detach`` stops the task and clears it.
* ``start()`` when the event stream connects (or at attach, if connected);
* ``refresh()`` after every event (the registry changed); a task may
  instead have a ``shared_refresh`` attribute, read at attach: a callable
  that many tasks share, called once per event for all of them (so that
  10,000 Services cost one call per event, not 10,000);
* ``stop()`` when the connection is lost (or at detach).

They must not block: a task spawns its own greenlets for I/O and kills them
in ``stop()``. Hold the manager weakly (as :class:`TaskBase` does): a task
that holds it strongly keeps the manager alive while attached.
"""
from __future__ import annotations

from .base import Task, TaskBase, safe_call
from .lookup import Lookup
from .monitor import Monitor
from .service import Service

__all__ = ["Task", "TaskBase", "safe_call", "Service", "Lookup", "Monitor"]
