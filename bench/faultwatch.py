"""A Monitor in its own process: ``python -m bench.faultwatch SPEC ATTRS SETTLE``.

``SPEC`` is :func:`bench.faultnet.connection_spec` as JSON, ``ATTRS`` the
Monitor's filter as JSON. Prints one JSON line per callback
(``{"event": "add"|"mod"|"del", "name": ..., "attrs": ...}``) and per
change of ``stale`` (``{"event": "stale", "stale": ...}``), until killed
or its parent is gone.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import gevent

from regmgr import TCP, Monitor, RegMgr, Styx
from regmgr.connections import Connection


def connection(spec: Mapping[str, Any]) -> Connection:
    """The transport ``spec`` names, with its probe options."""
    options = spec.get("options", {})
    if spec["transport"] == "tcp":
        return TCP(spec["host"], spec["new"], spec["find"], spec["event"], **options)
    if spec["transport"] == "styx":
        return Styx(spec["host"], spec["styx"], **options)
    raise ValueError(f"unknown transport {spec['transport']!r}")


def _say(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> None:
    spec, attrs, settle = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
    mgr = RegMgr(connection(spec))
    mgr.attach(Monitor(
        attrs, settle=settle,
        on_add=lambda name, a: _say(event="add", name=name, attrs=a),
        on_mod=lambda name, a: _say(event="mod", name=name, attrs=a),
        on_del=lambda name, a: _say(event="del", name=name, attrs=a),
        on_stale=lambda stale: _say(event="stale", stale=stale)))
    parent = os.getppid()
    while os.getppid() == parent:  # an orphan would watch forever
        gevent.sleep(1)


if __name__ == "__main__":
    main()
