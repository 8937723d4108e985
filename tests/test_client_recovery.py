"""No task dies silently (issue 11 item 5): a transport call that raises an
unexpected exception is logged with the task's name, and the task starts again.

The connections are real ones on a real registry; one method of one object
is wrapped so that its first call raises, as a bug in a transport would.
"""
import time

import gevent
import gevent.event
import pytest

from regmgr import Backoff, Lookup, Monitor, RegMgr, Service, Styx
from serverutil import eventually



@pytest.fixture
def fast():
    """Short retry delays (built in a test: mutmut's trampolines refuse calls at import)."""
    return Backoff(initial=0.01, maximum=0.1)


def fail_once(obj, method, error):
    """Make the next call of ``obj.method`` raise ``error``; later calls are the real ones."""
    real = getattr(obj, method)
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    setattr(obj, method, wrapped)
    return calls


def logged(caplog, error, who):
    """The regmgr log records of ``error`` (with its traceback) that name ``who``."""
    return [r for r in caplog.records
            if r.name == "regmgr" and r.exc_info and r.exc_info[1] is error
            and who in r.getMessage()]


@pytest.fixture
def bug():
    return UnicodeEncodeError("utf-8", "\udc80", 0, 1, "injected bug")


def test_service_survives_a_failing_open_new(manager_factory, registry_server, caplog, bug,
                                             fast):
    mgr = manager_factory(registry_server, backoff=fast)
    calls = fail_once(mgr.connection, "open_new", bug)
    svc = mgr.attach(Service("svc", {"a": "1"}))
    eventually(lambda: svc.registered)
    assert registry_server.index() == {"svc": {"a": "1"}}
    assert len(calls) == 2
    assert logged(caplog, bug, "Service('svc', {'a': '1'})")


def on_each_registration(mgr, prepare, *, first_only=False):
    """Hand each registration ``mgr`` opens (or only the first) to ``prepare(registration)``
    before the Service sees it; return the list of all of them, in order."""
    real_open_new = mgr.connection.open_new
    opened = []

    def open_new(name, attrs=None):
        registration = real_open_new(name, attrs)
        if not (first_only and opened):
            prepare(registration)
        opened.append(registration)
        return registration

    mgr.connection.open_new = open_new
    return opened


def test_service_survives_a_failing_registration(manager_factory, registry_server, caplog,
                                                 fast):
    """A registration whose notify() raises a TypeError: the service registers again."""
    mgr = manager_factory(registry_server, backoff=fast)
    bug = TypeError("injected bug in notify")
    opened = on_each_registration(
        mgr, lambda registration: fail_once(registration, "notify", bug), first_only=True)
    svc = mgr.attach(Service("svc"))
    eventually(lambda: len(opened) == 2 and svc.registered)
    assert registry_server.index() == {"svc": {}}
    assert logged(caplog, bug, "Service('svc', {})")


def test_service_survives_a_registration_ended_by_a_bug(manager_factory, registry_server,
                                                        caplog, fast):
    """A registration that reports its end with an unexpected error: registered again."""
    mgr = manager_factory(registry_server, backoff=fast)

    def end_by_a_bug(registration):
        real_notify = registration.notify
        bug = UnicodeEncodeError("utf-8", "", 0, 1, "bug")
        registration.notify = lambda callback: (
            real_notify(lambda error: None),  # from the hub, as the protocol says:
            gevent.get_hub().loop.run_callback(callback, bug))

    opened = on_each_registration(mgr, end_by_a_bug, first_only=True)
    svc = mgr.attach(Service("svc"))
    eventually(lambda: len(opened) == 2 and svc.registered)
    assert registry_server.index() == {"svc": {}}
    assert "Service('svc', {}): lost:" in caplog.text and "bug" in caplog.text


def test_monitor_and_lookup_survive_a_failing_find(manager_factory, registry_server, caplog, bug,
                                                   fast):
    mgr = manager_factory(registry_server, backoff=fast)
    owner = manager_factory(registry_server)
    owner.attach(Service("svc", {"a": "1"}))
    eventually(lambda: registry_server.index() == {"svc": {"a": "1"}})
    added = []
    fail_once(mgr.connection, "find_text", bug)  # what a Monitor reads its listings with
    monitor = mgr.attach(Monitor({"a": "1"}, on_add=lambda name, attrs: added.append(name)))
    eventually(lambda: added == ["svc"] and not monitor.stale)
    assert logged(caplog, bug, "Monitor({'a': '1'})")

    other = TypeError("injected bug in find")
    fail_once(mgr.connection, "find", other)
    assert mgr.attach(Lookup({"a": "1"})).wait(10) == {"svc": {"a": "1"}}
    assert logged(caplog, other, "Lookup({'a': '1'})")


def test_supervisor_survives_a_failing_open_event(manager_factory, registry_server, caplog, bug,
                                                  fast):
    connection = manager_factory(registry_server).connection  # a real one, of either transport
    fail_once(connection, "open_event", bug)
    with RegMgr(connection, backoff=fast) as mgr:
        assert mgr.wait_connected(10)
        assert logged(caplog, bug, f"registry {connection!r}")


def test_styx_write_limit_met_in_a_task_is_logged_and_retried(registry_server, caplog, fast):
    """msize 256 cannot carry a 300-byte value: the Service says so, and registers once updated."""
    with RegMgr(Styx(registry_server.host, registry_server.styx_port, msize=256),
                backoff=fast) as mgr:
        svc = mgr.attach(Service("svc", {"big": "x" * 300}))
        eventually(lambda: any("write limit" in str(r.exc_info[1])
                               for r in caplog.records if r.exc_info))
        assert not svc.registered and registry_server.index() == {}
        svc.update({"big": "small"})
        eventually(lambda: svc.registered)
        assert registry_server.index() == {"svc": {"big": "small"}}


def test_services_register_in_turns_and_hold_no_greenlet(manager, registry_server, monkeypatch):
    """At most CONCURRENT_REGISTRATIONS register at once; a registered one holds no greenlet."""
    monkeypatch.setattr("regmgr.tasks.service.CONCURRENT_REGISTRATIONS", 5)
    services = [manager.attach(Service(f"s{i}", {"i": i})) for i in range(40)]
    assert sum(s._greenlet is not None for s in services) == 5
    eventually(lambda: all(s.registered for s in services), timeout=20)
    assert len(registry_server.index()) == 40
    assert all(s._greenlet is None for s in services)


def test_refused_services_do_not_hold_up_the_others(manager_factory, registry_server,
                                                    monkeypatch, fast):
    monkeypatch.setattr("regmgr.tasks.service.CONCURRENT_REGISTRATIONS", 2)
    holder = manager_factory(registry_server)
    taken = [holder.attach(Service(f"dup{i}")) for i in range(4)]
    eventually(lambda: all(s.registered for s in taken))
    mgr = manager_factory(registry_server, backoff=fast)
    refused = [mgr.attach(Service(f"dup{i}", {"second": "yes"})) for i in range(4)]
    fresh = mgr.attach(Service("fresh"))
    eventually(lambda: fresh.registered, timeout=10)
    assert not any(s.registered for s in refused)
    holder.close()  # the names come free: the refused ones get them
    eventually(lambda: all(s.registered for s in refused), timeout=10)


def test_a_failing_check_is_logged_and_the_service_kept(manager_factory, registry_server,
                                                        caplog):
    """The keeper's find for its services fails: a lost connection is one line, a bug a
    traceback; the service stays registered and is checked again at the next event."""
    caplog.set_level("INFO", logger="regmgr")
    mgr = manager_factory(registry_server)
    svc = mgr.attach(Service("svc"))
    eventually(lambda: svc.registered)
    other = manager_factory(registry_server)
    lost, bug = ConnectionResetError("injected loss"), TypeError("injected bug")
    for n, error in enumerate((lost, bug)):
        calls = fail_once(mgr.connection, "find", error)
        other.attach(Service(f"other{n}"))  # an event: the keeper checks its services
        eventually(lambda: len(calls) >= 1)
    eventually(lambda: logged(caplog, bug, "cannot check 1 registrations"))
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("cannot check")
            ] == ["cannot check 1 registrations: injected loss", "cannot check 1 registrations"]
    assert svc.registered and "svc" in registry_server.index()


def test_a_registration_whose_notify_fails_is_not_registered(manager_factory, registry_server,
                                                             caplog):
    """Until the next attempt (an hour away here) the service says it is not registered."""
    mgr = manager_factory(registry_server, backoff=Backoff(initial=3600, maximum=3600))
    bug = TypeError("injected bug in notify")
    on_each_registration(mgr, lambda registration: fail_once(registration, "notify", bug))
    svc = mgr.attach(Service("svc"))
    eventually(lambda: logged(caplog, bug, "Service('svc', {})"))
    assert not svc.registered
    svc.refresh()  # what every registry event does: nothing to check while unregistered
    from regmgr.tasks.service import _checks
    checks = _checks.get(mgr.connection)  # no longer watched: no check holds the connection
    assert checks is None or (not checks._watched and checks._greenlet is None)
    eventually(lambda: registry_server.index() == {})


def test_a_lost_service_waits_its_backoff_before_registering_again(manager_factory,
                                                                   registry_server):
    """A service the registry dropped registers again only after a backoff delay (here a
    fixed 2 s): many services lost together must not come back in one burst. A lower
    bound, so a busy machine cannot break it."""
    mgr = manager_factory(registry_server, backoff=Backoff(initial=2.0, maximum=2.0,
                                                           jitter=False))
    svc = mgr.attach(Service("svc"))
    eventually(lambda: svc.registered)
    entry = registry_server.registry.get("svc")
    dropped = time.monotonic()
    registry_server.registry.remove(entry, entry.owner)
    eventually(lambda: registry_server.registry.get("svc") not in (None, entry), timeout=20)
    assert time.monotonic() - dropped >= 2.0


def test_the_line_skips_services_that_left_it(manager, registry_server, monkeypatch):
    """One turn at a time: a service detached while in line never registers, one that
    left and came back (in line twice) registers once, and the turns all end."""
    from regmgr.tasks.service import _turns_of
    monkeypatch.setattr("regmgr.tasks.service.CONCURRENT_REGISTRATIONS", 1)
    turns = _turns_of(manager.connection)
    running = []

    def sample():
        while True:
            running.append(turns._running)
            gevent.sleep(0)

    sampler = gevent.spawn(sample)
    try:
        services = [manager.attach(Service(f"s{i}")) for i in range(4)]
        manager.detach(services[1])
        manager.detach(services[2])
        manager.attach(services[2])
        eventually(lambda: all(services[i].registered for i in (0, 2, 3)), timeout=20)
        eventually(lambda: turns._running == 0 and not turns._waiting)
    finally:
        sampler.kill()
    assert set(registry_server.index()) == {"s0", "s2", "s3"}
    assert all(s._greenlet is None for s in services) and not services[1].registered
    assert max(running) == 1


def test_a_service_restarted_while_the_line_is_full_is_not_lost(manager, registry_server,
                                                                monkeypatch, caplog):
    """Detached and attached again with no turn free: the old registration's end is the
    service's own close, not a loss (no 'lost' warning, no second place in line)."""
    from regmgr.tasks.service import _checks, _turns_of
    svc = manager.attach(Service("svc"))
    eventually(lambda: svc.registered)
    monkeypatch.setattr("regmgr.tasks.service.CONCURRENT_REGISTRATIONS", 0)  # no turn free
    manager.detach(svc)
    manager.attach(svc)
    eventually(lambda: svc not in _checks[manager.connection]._watched)  # its end was handled
    assert "lost" not in caplog.text
    assert len(_turns_of(manager.connection)._waiting) == 1


def hold_end(registration):
    """Keep ``registration``'s end report: return the list that gets its notify callback."""
    real_notify = registration.notify
    held = []

    def notify(callback):
        held.append(callback)
        real_notify(lambda error: None)

    registration.notify = notify
    return held


def in_hub(fn, *args):
    """Run ``fn(*args)`` from the hub, as a registration reports its end; wait until done."""
    done = []
    gevent.get_hub().loop.run_callback(lambda: done.append(fn(*args)))
    eventually(lambda: done)


def test_the_late_end_of_a_replaced_registration_is_not_a_loss(manager_factory,
                                                               registry_server, caplog, fast):
    """A registration's end may be reported after the service has registered again
    (detached and attached meanwhile): it is no loss, and the new registration stays."""
    caplog.set_level("INFO", logger="regmgr")
    mgr = manager_factory(registry_server, backoff=fast)
    ends = []
    opened = on_each_registration(
        mgr, lambda registration: ends.append(hold_end(registration)), first_only=True)
    svc = mgr.attach(Service("svc"))
    eventually(lambda: svc.registered and ends[0])
    mgr.detach(svc)
    mgr.attach(svc)
    eventually(lambda: len(opened) == 2 and svc.registered)
    in_hub(ends[0][0], ConnectionResetError("reported late"))
    assert "lost" not in caplog.text
    assert svc.registered and registry_server.index() == {"svc": {}}
    assert [r.getMessage() for r in caplog.records if r.name == "regmgr"
            and r.getMessage().startswith("service")] == ["service 'svc': registered"] * 2


def test_a_failure_in_handling_a_registration_end_is_logged(manager_factory, registry_server,
                                                            caplog, bug):
    """The end of a registration is handled in the hub: a bug there (here the transport's
    close() raises) is a logged traceback naming the service, not a dead hub callback."""
    mgr = manager_factory(registry_server)
    ends = []
    opened = on_each_registration(mgr, lambda registration: ends.append(hold_end(registration)))
    svc = mgr.attach(Service("svc"))
    eventually(lambda: svc.registered and ends[0])
    fail_once(opened[0], "close", bug)
    in_hub(ends[0][0], ConnectionResetError("link broke"))
    assert [r.getMessage() for r in caplog.records if r.exc_info and r.exc_info[1] is bug] == [
        "Service('svc', {}): cannot handle the end of its registration"]
    opened[0].close()  # the real one
    eventually(lambda: registry_server.index() == {})


def test_at_most_the_allowed_registrations_are_under_way(manager, registry_server,
                                                          monkeypatch):
    """However the turns end, no more than CONCURRENT_REGISTRATIONS first attempts run at once."""
    monkeypatch.setattr("regmgr.tasks.service.CONCURRENT_REGISTRATIONS", 2)
    real_open_new = manager.connection.open_new
    now, most = [0], [0]

    def open_new(name, attrs=None):
        now[0] += 1
        most[0] = max(most[0], now[0])
        try:
            return real_open_new(name, attrs)
        finally:
            now[0] -= 1

    manager.connection.open_new = open_new
    services = [manager.attach(Service(f"s{i}")) for i in range(12)]
    eventually(lambda: all(s.registered for s in services), timeout=20)
    assert most[0] <= 2
    assert len(registry_server.index()) == 12


def test_a_lost_service_in_line_keeps_its_backoff_delay(manager_factory, registry_server,
                                                         monkeypatch, caplog):
    """A dropped service that must wait for a turn still waits its backoff delay (a fixed
    2 s here) once its turn comes. A lower bound, so a busy machine cannot break it."""
    monkeypatch.setattr("regmgr.tasks.service.CONCURRENT_REGISTRATIONS", 1)
    mgr = manager_factory(registry_server, backoff=Backoff(initial=2.0, maximum=2.0,
                                                           jitter=False))
    svc = mgr.attach(Service("svc"))
    eventually(lambda: svc.registered)
    real_open_new = mgr.connection.open_new
    gate = gevent.event.Event()

    def open_new(name, attrs=None):
        if name == "blocker":
            gate.wait()  # holds the only turn
        return real_open_new(name, attrs)

    mgr.connection.open_new = open_new
    blocker = mgr.attach(Service("blocker"))
    entry = registry_server.registry.get("svc")
    registry_server.registry.remove(entry, entry.owner)
    eventually(lambda: "Service('svc', {}): lost:" in caplog.text, timeout=10)
    released = time.monotonic()
    gate.set()
    eventually(lambda: svc.registered and blocker.registered, timeout=20)
    assert time.monotonic() - released >= 2.0
