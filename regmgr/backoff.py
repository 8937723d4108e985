"""Retry delays: exponential, capped, jittered, and fast the first time.

A lost registry usually comes back quickly (a restart), so the first retry
waits only ``initial``; many clients that lost it together do not all come
back in step. The default cap, 0.45 s, means a registry that is back is
used within about half a second whatever the outage lasted, at the cost of
2.2 to 4.4 connection attempts per second per client while it is down
(each a refused or unanswered connect: cheap for the registry host).

The default factor, 1.25, keeps the retries close together while a
restart is likely to finish: a registry process takes some 0.1-0.4 s to
come back, and a client waits, on average, half the gap between two
retries at that moment. With doubling (0.05, 0.1, 0.2, 0.4 s) those gaps
were 0.1-0.4 s; growing by a quarter they are 0.05-0.12 s, for about 10
attempts in the first 1.3 s instead of 5.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """A retry policy; :meth:`delays` gives a fresh sequence for each outage.

    Delay *n* is ``initial * factor**n`` capped at ``maximum``; with
    ``jitter`` each is drawn uniformly from its upper half.
    """

    initial: float = 0.05
    factor: float = 1.25
    maximum: float = 0.45
    jitter: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("need 0 < initial <= maximum")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")

    def delays(self) -> Iterator[float]:
        """Endless delays for one run of retries; start a new one after a success."""
        delay = self.initial
        while True:
            yield random.uniform(delay / 2, delay) if self.jitter else delay
            delay = min(delay * self.factor, self.maximum)
