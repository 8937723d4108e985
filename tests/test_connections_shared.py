"""SharedListing: one find for many concurrent callers, never older than the call."""
import gevent
import gevent.event

from regmgr.connections.shared import SharedListing


class Finds:
    """A fake ``find`` that records its filters and answers after a short pause."""

    def __init__(self, error=None):
        self.filters = []
        self.error = error

    def __call__(self, attrs):
        self.filters.append(dict(attrs))
        number = len(self.filters)
        gevent.sleep(0.01)
        if self.error is not None:
            raise self.error
        return {f"find{number}": {}}


def test_concurrent_callers_share_one_find_filtered_by_what_they_share():
    shared, find = SharedListing(), Finds()
    callers = [gevent.spawn(shared, find, {"proto": "http", "port": str(i)}) for i in range(50)]
    gevent.joinall(callers, raise_error=True)
    assert find.filters == [{"proto": "http"}]
    assert all(caller.value == {"find1": {}} for caller in callers)


def test_a_caller_during_a_find_gets_the_next_one():
    shared, find = SharedListing(), Finds()
    first = gevent.spawn(shared, find, {})
    gevent.sleep(0.001)  # the first find is under way
    later = [gevent.spawn(shared, find, {}) for _ in range(3)]
    gevent.joinall([first, *later], raise_error=True)
    assert first.value == {"find1": {}}
    assert [caller.value for caller in later] == [{"find2": {}}] * 3
    assert len(find.filters) == 2


def test_a_failed_find_fails_every_caller_of_it_and_not_the_next(hub_errors):
    hub_errors.expect(ConnectionError, match="registry gone")  # how each caller ends
    shared, find = SharedListing(), Finds(error=ConnectionError("registry gone"))
    callers = [gevent.spawn(shared, find, {}) for _ in range(3)]
    gevent.joinall(callers)
    assert all(isinstance(caller.exception, ConnectionError) for caller in callers)
    find.error = None
    assert shared(find, {}) == {"find2": {}}


def test_callers_killed_while_waiting_leave_the_find_to_the_others():
    shared, find = SharedListing(), Finds()
    doomed = gevent.spawn(shared, find, {})
    kept = gevent.spawn(shared, find, {})
    gevent.sleep(0)
    doomed.kill()
    assert kept.get(timeout=1) == {"find1": {}}
    assert isinstance(doomed.value, gevent.GreenletExit)


def test_a_find_waits_for_the_callers_on_their_way():
    """``gather`` holds the find until the callers it knows of have come."""
    arrived = gevent.event.Event()
    shared, find = SharedListing(lambda: arrived.wait(5)), Finds()
    first = gevent.spawn(shared, find, {})
    gevent.sleep(0.02)  # without gather, the first find would be over by now
    later = [gevent.spawn(shared, find, {}) for _ in range(3)]
    gevent.sleep(0)
    arrived.set()
    gevent.joinall([first, *later], raise_error=True)
    assert len(find.filters) == 1
    assert all(caller.value == {"find1": {}} for caller in [first, *later])
