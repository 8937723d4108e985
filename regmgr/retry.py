"""The one retry loop of regmgr: every task and the supervisor run in it.

Each of them does the same thing: try something (register, open the event
stream, find), and once it worked, hold on to it (watch the registration,
serve the stream, apply the listing) until it ends; start over after a
backoff delay when either step fails. Failures never end the loop: an
expected one (:data:`~regmgr.errors.TRANSIENT_ERRORS`) is one log line, any
other exception a logged traceback; so no task greenlet dies silently.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import gevent

from .backoff import Backoff
from .errors import TRANSIENT_ERRORS

__all__ = ["retry_loop"]

log = logging.getLogger("regmgr")

T = TypeVar("T")


def _always() -> bool:
    return True


def retry_loop(who: object, backoff: Backoff, attempt: Callable[[], T],
               hold: Callable[[T], object], *,
               running: Callable[[], bool] = _always) -> None:
    """While ``running()``: ``hold(attempt())``, backing off after each failure.

    A failure of ``attempt`` waits the next delay of the current run of
    ``backoff``; a successful attempt starts a new run, so a failure of
    ``hold`` (a connection lost after it was made) waits the shortest delay.
    When ``hold`` returns, the next attempt follows at once. Failures are
    logged with ``repr(who)``.
    """
    delays = backoff.delays()
    while running():
        try:
            result = attempt()
        except TRANSIENT_ERRORS as err:
            log.warning("%.200r: %s", who, err)
        except Exception:
            log.exception("%.200r: unexpected error; retrying", who)
        else:
            delays = backoff.delays()
            try:
                hold(result)
                continue
            except TRANSIENT_ERRORS as err:
                log.warning("%.200r: lost: %s", who, err)
            except Exception:
                log.exception("%.200r: unexpected error; starting again", who)
        if running():
            gevent.sleep(next(delays))
