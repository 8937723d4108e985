"""Service, Lookup and Monitor against a real registry: the Perl original's scenarios and more."""

import gevent
import gevent.event
import gevent.socket
import pytest
from gevent.server import StreamServer

from regmgr import TCP, Backoff, Lookup, Monitor, RegMgr, Service, Styx
from serverutil import Relay, eventually, register


class Events:
    """Monitor callbacks that record ``(kind, name, attrs)``."""

    def __init__(self):
        self.log = []

    def monitor(self, attrs=None, **kwargs):
        return Monitor(attrs, on_add=self.add, on_del=self.delete, on_mod=self.mod, **kwargs)

    def add(self, name, attrs):
        self.log.append(("add", name, attrs))

    def delete(self, name, attrs):
        self.log.append(("del", name, attrs))

    def mod(self, name, attrs):
        self.log.append(("mod", name, attrs))


@pytest.fixture
def events():
    return Events()


class ScriptedFind:
    """A find port that answers the filter ``line`` from ``replies`` in turn.

    After the last reply it repeats it; any other filter gets no services.
    ``served`` counts the finds of ``line``.
    """

    def __init__(self, line, replies):
        self.line = line
        self.replies = replies
        self.served = 0
        self._server = StreamServer(("127.0.0.1", 0), self._handle)
        self._server.start()
        self.port = self._server.server_port

    def _handle(self, sock, address):
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        reply = b""
        if data.strip() == self.line:
            reply = self.replies[min(self.served, len(self.replies) - 1)]
            self.served += 1
        sock.sendall(reply)
        sock.close()

    def stop(self):
        self._server.stop(timeout=1)


# -- Service ----------------------------------------------------------------

@pytest.mark.parametrize("name, error", [
    ("a b", "bad character in service name"),
    ("a/b", "bad character in service name"),
    ("a\x7fb", "bad character in service name"),
    ("", "bad service name"),
    ("event", "bad service name"),
])
def test_service_name_is_checked_before_io(name, error):
    with pytest.raises(ValueError, match=error):
        Service(name)


def test_service_attribute_types():
    assert Service("s", {"n": 1, "f": 0.5, "s": "x"}).attrs == {"n": "1", "f": "0.5", "s": "x"}
    for bad in ({"a": None}, {"a": b"x"}, {"a": True}, {1: "x"}):
        with pytest.raises(TypeError):
            Service("s", bad)
    with pytest.raises(TypeError, match=r"^service name must be str, not bytes$"):
        Service(b"s")
    with pytest.raises(TypeError):
        Service("s").update({"a": ["x"]})


def test_a_task_started_unattached_says_so():
    for task in (Service("svc"), Lookup(), Monitor()):
        with pytest.raises(AssertionError, match=r"^start\(\) of a task that is not attached\b"):
            task.start()


def test_registered_services_are_checked_with_the_pairs_they_all_hold():
    """The keeper's one find for all of a connection's services filters on their common pairs."""
    from regmgr.tasks.service import _common
    assert _common([]) == {}
    assert _common([{"a": "1", "b": "2"}]) == {"a": "1", "b": "2"}
    assert _common([{"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "x", "c": "3"}]) == {
        "a": "1", "c": "3"}
    assert _common([{"a": "1"}, {"b": "2"}, {"a": "1"}]) == {}
    assert _common([{}, {"a": "1"}]) == {}


def test_service_registers_updates_and_unregisters(manager, registry_server, caplog):
    caplog.set_level("INFO", logger="regmgr")
    svc = manager.attach(Service("svc", {"a": 1}))
    eventually(lambda: svc.registered)
    assert [r.getMessage() for r in caplog.records if r.name == "regmgr"] == [
        "service 'svc': registered"]
    assert registry_server.index() == {"svc": {"a": "1"}}
    svc.update({"b": "x y", "a": 2})
    assert svc.attrs == {"a": "2", "b": "x y"}
    eventually(lambda: registry_server.index() == {"svc": {"a": "2", "b": "x y"}})
    manager.detach(svc)
    assert not svc.registered
    eventually(lambda: registry_server.index() == {})


def test_updates_while_disconnected_are_carried(manager, registry_server):
    svc = manager.attach(Service("svc", {"a": 1}))
    eventually(lambda: svc.registered)
    registry_server.stop()
    eventually(lambda: not svc.registered)
    svc.update({"a": 3, "c": "new"})
    registry_server.start()
    eventually(lambda: registry_server.index() == {"svc": {"a": "3", "c": "new"}})


def test_an_update_that_changes_nothing_sends_nothing(manager, registry_server):
    """Writing a value a service already has still reorders its attributes
    (registry4.md §3: the attributes in front of it are reversed), so an
    update must send only what changed."""
    svc = manager.attach(Service("svc", {"x": "1", "y": "1", "z": "1"}))
    eventually(lambda: svc.registered)
    before = registry_server.registry.get("svc").attrs
    svc.update({"x": 1, "y": "1", "z": "1"})
    svc.update({"w": "2"})
    eventually(lambda: registry_server.registry.get("svc").get("w") == "2")
    assert registry_server.registry.get("svc").attrs == [("w", "2")] + before


def test_a_service_is_listed_as_one_write_of_its_attributes(manager, registry_server):
    """registry4.md §3: each new attribute goes in front, and rewriting one reorders the
    others; a registration writes each attribute once, so they are listed in reverse."""
    svc = manager.attach(Service("svc", {"x": "1", "y": "1", "z": "1"}))
    eventually(lambda: svc.registered)
    assert registry_server.registry.get("svc").attrs == [("z", "1"), ("y", "1"), ("x", "1")]


def test_an_update_the_connection_fails_to_send_is_logged(manager, caplog):
    """update() does not raise on a lost connection: it logs, and the keeper re-registers."""
    svc = manager.attach(Service("svc", {"a": "1"}))
    eventually(lambda: svc.registered)

    def lost(attrs):
        raise ConnectionResetError("injected")

    svc._registration.update = lost  # as a connection that died a moment ago answers
    with caplog.at_level("INFO", logger="regmgr"):
        svc.update({"a": "2"})
    assert svc.attrs == {"a": "2"}
    assert [r.getMessage() for r in caplog.records if "not sent" in r.msg] == [
        "service 'svc': update not sent: injected"]


def test_duplicate_name_is_retried_until_free(manager, registry_server, caplog):
    squatter = register(registry_server, b"svc owner squatter\n")
    eventually(lambda: "svc" in registry_server.index())
    svc = manager.attach(Service("svc", {"owner": "us"}))
    eventually(lambda: "duplicate service name" in caplog.text)
    assert not svc.registered
    squatter.close()
    eventually(lambda: svc.registered, timeout=10)
    assert registry_server.index() == {"svc": {"owner": "us"}}


def test_service_notices_it_was_removed(manager, registry_server):
    svc = manager.attach(Service("svc", {"a": 1}))
    eventually(lambda: svc.registered)
    entry = registry_server.registry.get("svc")
    registry_server.registry.remove(entry, entry.owner)  # as an owner's Tremove over Styx would
    eventually(lambda: registry_server.registry.get("svc") not in (None, entry), timeout=10)
    assert registry_server.index() == {"svc": {"a": "1"}}
    eventually(lambda: svc.registered)


def test_a_service_dropped_by_the_registry_says_so_and_waits_its_turn(
        manager_factory, registry_server, caplog):
    """Removed from the registry (not by its owner): one warning that names the service and
    says why; until it registers again (an hour away here) it is not registered and a
    refresh() (the Task protocol allows one at any time) is harmless."""
    mgr = manager_factory(registry_server, backoff=Backoff(initial=3600, maximum=3600))
    svc = mgr.attach(Service("svc", {"a": 1}))
    eventually(lambda: svc.registered)
    entry = registry_server.registry.get("svc")
    registry_server.registry.remove(entry, entry.owner)
    eventually(lambda: ": lost:" in caplog.text, timeout=10)
    assert [r.getMessage() for r in caplog.records if ": lost:" in r.getMessage()] == [
        "Service('svc', {'a': '1'}): lost: no longer listed by the registry"]
    assert not svc.registered
    svc.refresh()
    assert registry_server.index() == {}


def test_a_detached_service_leaves_the_others_checked(manager, registry_server):
    """The check of a connection's services goes on while any of them is registered."""
    gone = manager.attach(Service("gone"))
    kept = manager.attach(Service("kept", {"a": 1}))
    eventually(lambda: gone.registered and kept.registered)
    manager.detach(gone)
    eventually(lambda: registry_server.index() == {"kept": {"a": "1"}})
    entry = registry_server.registry.get("kept")
    registry_server.registry.remove(entry, entry.owner)
    eventually(lambda: registry_server.registry.get("kept") not in (None, entry), timeout=10)
    assert registry_server.index() == {"kept": {"a": "1"}}
    eventually(lambda: kept.registered)


# -- Lookup -----------------------------------------------------------------

def test_lookup_finds_one_and_detaches(manager):
    svc = manager.attach(Service("svc", {"proto": "http"}))
    manager.attach(Service("other", {"proto": "ssh"}))
    eventually(lambda: svc.registered)
    results = []
    lookup = manager.attach(Lookup({"proto": "http"}, callback=results.append))
    assert lookup.wait(5) == {"svc": {"proto": "http"}}
    eventually(lambda: results == [{"svc": {"proto": "http"}}])
    assert lookup.manager is None and lookup not in manager.tasks


def test_lookup_callback_errors_are_logged(manager, caplog):
    def callback(found):
        raise RuntimeError("callback bug")

    lookup = manager.attach(Lookup(callback=callback))
    assert lookup.wait(5) == {}
    eventually(lambda: "callback bug" in caplog.text)
    assert f"lookup callback {callback!r} raised" in caplog.text


def test_lookup_wait_times_out_with_a_clear_error():
    with pytest.raises(TimeoutError, match=r"^no lookup result within 0.05 s$"):
        Lookup({"k": "v"}).wait(0.05)


def test_a_failing_find_is_logged_with_the_task_and_retried(registry_server, caplog):
    nothing = gevent.socket.socket()
    nothing.bind(("127.0.0.1", 0))  # a port with no listener
    conn = TCP("127.0.0.1", new_port=registry_server.new_port,
               find_port=nothing.getsockname()[1], event_port=registry_server.event_port)
    mgr = RegMgr(conn)
    try:
        lookup = mgr.attach(Lookup({"k": "v"}))
        monitor = mgr.attach(Monitor({"m": "w"}))
        eventually(lambda: "Lookup({'k': 'v'}): " in caplog.text)
        eventually(lambda: "Monitor({'m': 'w'}): " in caplog.text)
        assert lookup.manager is mgr and monitor.stale  # still attached: they try again
    finally:
        mgr.close()
        nothing.close()


def test_monitor_defaults_and_stale_reports(manager):
    assert Monitor().settle == 2.0  # the documented default
    stale = []
    monitor = manager.attach(Monitor(on_stale=stale.append))
    assert monitor.stale
    eventually(lambda: stale == [False])
    manager.detach(monitor)
    assert monitor.stale and stale == [False, True]


# -- Monitor ----------------------------------------------------------------

def test_monitor_add_one_add_two_modify_twice_delete_two(manager, events):
    monitor = manager.attach(events.monitor())
    one = manager.attach(Service("one", {"a": 1}))
    eventually(lambda: events.log == [("add", "one", {"a": "1"})])
    two = manager.attach(Service("two", {"a": 2}))
    eventually(lambda: len(events.log) == 2)
    assert events.log[1] == ("add", "two", {"a": "2"})
    for value in ("x", "y"):
        one.update({"a": value})
        two.update({"a": value})
        eventually(lambda value=value: monitor.services == {"one": {"a": value}, "two": {"a": value}})
        assert sorted(events.log[-2:]) == [("mod", "one", {"a": value}), ("mod", "two", {"a": value})]
    assert len(events.log) == 6
    manager.detach(one)
    manager.detach(two)
    eventually(lambda: monitor.services == {})
    assert sorted(events.log[-2:]) == [("del", "one", {"a": "y"}), ("del", "two", {"a": "y"})]


def test_monitor_filter_and_an_update_that_makes_a_match(manager, events):
    manager.attach(events.monitor({"proto": "http"}))
    manager.attach(Service("web", {"proto": "http"}))
    late = manager.attach(Service("late", {"proto": "none"}))
    eventually(lambda: events.log == [("add", "web", {"proto": "http"})])
    eventually(lambda: late.registered)
    manager.attach(Service("marker", {"proto": "http"}))  # a find after late's registration
    eventually(lambda: events.log[-1][1] == "marker")
    assert [name for _, name, _ in events.log] == ["web", "marker"]
    late.update({"proto": "http"})
    eventually(lambda: events.log[2:] == [("add", "late", {"proto": "http"})])


def test_monitor_callback_errors_change_nothing(manager, caplog):
    seen = []

    def on_add(name, attrs):
        seen.append(name)
        raise RuntimeError("callback bug")

    monitor = manager.attach(Monitor(on_add=on_add))
    manager.attach(Service("a"))
    eventually(lambda: seen == ["a"])
    manager.attach(Service("b"))
    eventually(lambda: seen == ["a", "b"])
    assert set(monitor.services) == {"a", "b"}
    assert [str(r.exc_info[1]) for r in caplog.records if r.exc_info] == ["callback bug"] * 2
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [
        f"monitor callback {on_add!r} raised; ignored"] * 2


def test_monitor_keeps_delivering_under_churn(manager):
    mods = []
    monitor = manager.attach(Monitor(on_mod=lambda name, attrs: mods.append(attrs["n"])))
    svc = manager.attach(Service("busy", {"n": 0}))
    eventually(lambda: "busy" in monitor.services)

    def churn():
        for n in range(1, 100_000):
            svc.update({"n": n})
            gevent.sleep(0.001)

    churner = gevent.spawn(churn)
    try:
        eventually(lambda: len(mods) >= 5, timeout=10)
        during = len(mods)
        eventually(lambda: len(mods) > during, timeout=10)  # still delivering, not starved
    finally:
        churner.kill()
    last = svc.attrs["n"]
    eventually(lambda: monitor.services["busy"]["n"] == last)


def test_restart_brings_everything_back(manager, registry_server, events):
    monitor = manager.attach(events.monitor())
    services = [manager.attach(Service(f"s{i}", {"i": i})) for i in range(5)]
    eventually(lambda: len(monitor.services) == 5)
    registry_server.restart()
    eventually(lambda: all(svc.registered for svc in services) and len(registry_server.index()) == 5)
    assert manager.lookup(timeout=5) == {f"s{i}": {"i": str(i)} for i in range(5)}
    eventually(lambda: monitor.services == registry_server.index())


def test_monitor_reports_what_changed_while_it_was_stopped(manager, registry_server, events):
    keep = manager.attach(Service("keep", {"v": 1}))
    gone = manager.attach(Service("gone", {"v": 1}))
    monitor = manager.attach(events.monitor(settle=0))
    eventually(lambda: len(monitor.services) == 2)
    manager.detach(monitor)  # stop(), as a lost connection does
    manager.detach(gone)
    keep.update({"v": 2})
    manager.attach(Service("fresh", {"v": 1}))
    eventually(lambda: registry_server.index() == {"keep": {"v": "2"}, "fresh": {"v": "1"}})
    witness = manager.attach(Monitor())  # an attached monitor has seen the changes by now
    eventually(lambda: witness.services == registry_server.index())
    assert len(events.log) == 2 and len(monitor.services) == 2
    manager.attach(monitor)
    eventually(lambda: monitor.services == {"keep": {"v": "2"}, "fresh": {"v": "1"}})
    assert sorted(events.log[2:]) == [("add", "fresh", {"v": "1"}), ("del", "gone", {"v": "1"}),
                                      ("mod", "keep", {"v": "2"})]


def test_monitor_deletes_only_when_two_finds_in_a_row_miss(registry_server, events):
    # A registry killed while it answers a find cuts the listing short.
    both, only_a = b"a kind m\nb kind m\n", b"a kind m\n"
    script = ScriptedFind(b"kind m", [both, only_a, both, only_a, only_a])
    mgr = RegMgr(TCP("127.0.0.1", new_port=registry_server.new_port, find_port=script.port,
                     event_port=registry_server.event_port))
    try:
        mgr.attach(events.monitor({"kind": "m"}, settle=0))
        eventually(lambda: len(events.log) == 2)  # find 1
        poke = register(registry_server, b"poke\n")  # an event: find 2 misses b, find 3 has it
        eventually(lambda: script.served == 3)
        poke.sendall(b"x 1\n")  # another: finds 4 and 5 miss b
        eventually(lambda: script.served == 5)
        eventually(lambda: len(events.log) == 3)
        assert events.log == [("add", "a", {"kind": "m"}), ("add", "b", {"kind": "m"}),
                              ("del", "b", {"kind": "m"})]
        poke.close()
    finally:
        mgr.close()
        script.stop()


def test_monitor_stop_lets_a_callback_finish_and_delivers_no_more(manager, registry_server):
    socks = [register(registry_server, b"%s k v\n" % name) for name in (b"a", b"b")]
    eventually(lambda: len(registry_server.index()) == 2)
    entered, release, finished = gevent.event.Event(), gevent.event.Event(), []
    workers = []

    def on_add(name, attrs):
        workers.append(gevent.getcurrent())
        entered.set()
        release.wait()
        finished.append(name)

    monitor = manager.attach(Monitor({"k": "v"}, on_add=on_add))
    assert entered.wait(5)
    manager.detach(monitor)  # stop() while the callback runs
    release.set()
    eventually(lambda: finished)
    # The worker leaves after the callback: it does not wait for another find.
    eventually(lambda: workers[0].dead)
    monitor.refresh()
    assert len(finished) == 1 and set(monitor.services) == set(finished)
    monitor.stop()  # again, as a manager closed after a disconnection does: harmless
    for sock in socks:
        sock.close()


@pytest.mark.parametrize("transport", ["tcp", "styx"])
def test_updates_made_while_registering_are_sent(registry_server, transport):
    if transport == "tcp":  # the registration is confirmed by finds: hold those
        relay = Relay(registry_server.find_port)
        conn = TCP("127.0.0.1", new_port=registry_server.new_port, find_port=relay.port,
                   event_port=registry_server.event_port)
    else:
        relay = Relay(registry_server.styx_port)
        conn = Styx("127.0.0.1", relay.port)
    mgr = RegMgr(conn)
    try:
        assert mgr.wait_connected(5)
        relay.hold()
        svc = mgr.attach(Service("svc", {"a": 1}))
        eventually(lambda: relay.held)  # open_new is under way
        svc.update({"b": 2})
        relay.release()
        eventually(lambda: registry_server.index() == {"svc": {"a": "1", "b": "2"}})
        assert svc.registered
    finally:
        mgr.close()
        relay.stop()


def test_the_checks_filter_keeps_to_what_a_session_can_write():
    from regmgr.tasks.service import CHECK_FILTER, _common

    big = {"a": "x" * 20000, "proto": "http", "b": "y" * (CHECK_FILTER - 10)}
    assert _common([big, dict(big)]) == {"proto": "http"}
    assert _common([{"proto": "http", "n": "1"}, {"proto": "http", "n": "2"}]) == {"proto": "http"}


def test_the_checks_filter_is_cut_at_its_exact_edge():
    """Pairs are kept in order while the filter line the find sends (newline included)
    stays within CHECK_FILTER characters: a pair that just fits is kept, one character
    more and it is left out (the pairs before it are kept)."""
    from regmgr.tasks.service import CHECK_FILTER, _common
    from regmgr.wire import format_attrs

    for extra in (0, 1):
        attrs = {"a": "1", "bb": "2", "cc": "x" * (CHECK_FILTER - 13 + extra)}
        assert len(format_attrs(attrs) + "\n") == CHECK_FILTER + extra
        expected = attrs if not extra else {"a": "1", "bb": "2"}
        assert _common([attrs]) == expected
        assert _common([attrs, {"z": "9", **attrs}]) == expected


def test_monitor_applies_a_deletion_and_additions_seen_in_one_find(manager, registry_server,
                                                                    events):
    """A find that misses one service and lists new ones reports every addition at once
    (the deletion waits for a second find that misses it too)."""
    registry = registry_server.registry
    old = registry.create("test")
    registry.write(old, "old a 1")
    monitor = manager.attach(events.monitor())
    eventually(lambda: set(monitor.services) == {"old"} and not monitor.stale)
    registry.remove(old, "test")  # then, before any find can run, three new ones
    for name in ("new1", "new2", "new3"):
        registry.write(registry.create("test"), f"{name} a 1")
    eventually(lambda: set(monitor.services) == {"new1", "new2", "new3"})
    assert sorted(e[1] for e in events.log if e[0] == "add") == ["new1", "new2", "new3", "old"]
    assert [e[1] for e in events.log if e[0] == "del"] == ["old"]


def test_a_service_detached_as_its_registration_completes_leaves_nothing_registered(
        manager, registry_server):
    """A detach whose kill would land after open_new's last wait was answered."""
    real_open_new = manager.connection.open_new
    opened = []

    def open_new(name, attrs=None):
        registration = real_open_new(name, attrs)
        opened.append(registration)
        manager.detach(service)  # the registering greenlet is no longer the service's
        return registration

    manager.connection.open_new = open_new
    service = manager.attach(Service("late"))
    eventually(lambda: opened and registry_server.index() == {})
    assert not service.registered and service.manager is None


class FindOnly:
    """A real connection seen through the Connection protocol alone: it offers no
    ``find_text``, which the protocol leaves optional."""

    def __init__(self, connection):
        self._connection = connection

    def open_event(self):
        return self._connection.open_event()

    def open_new(self, name, attrs=None):
        return self._connection.open_new(name, attrs)

    def find(self, attrs=None):
        return self._connection.find(attrs)


def test_monitor_on_a_connection_without_find_text(connection_factory, registry_server, events):
    """The Monitor falls back on find(): the same filter, additions, changes and deletions."""
    mgr = RegMgr(FindOnly(connection_factory(registry_server)))
    try:
        monitor = mgr.attach(events.monitor({"proto": "http"}))
        web = mgr.attach(Service("web", {"proto": "http"}))
        other = mgr.attach(Service("other", {"proto": "ssh"}))
        eventually(lambda: events.log == [("add", "web", {"proto": "http"})])
        eventually(lambda: other.registered)
        mgr.attach(Service("marker", {"proto": "http"}))  # a find after other's registration
        eventually(lambda: len(events.log) == 2)
        assert events.log[1] == ("add", "marker", {"proto": "http"})
        web.update({"n": 1})
        eventually(lambda: len(events.log) == 3)
        assert events.log[2] == ("mod", "web", {"proto": "http", "n": "1"})
        mgr.detach(web)
        eventually(lambda: len(events.log) == 4)
        assert events.log[3] == ("del", "web", {"proto": "http", "n": "1"})
        assert monitor.services == {"marker": {"proto": "http"}} and not monitor.stale
    finally:
        mgr.close()


def test_monitor_on_stale_errors_are_logged(manager, caplog):
    def on_stale(stale):
        raise RuntimeError("on_stale bug")

    monitor = manager.attach(Monitor(on_stale=on_stale))
    eventually(lambda: not monitor.stale)
    manager.detach(monitor)
    assert monitor.stale
    assert [(r.getMessage(), str(r.exc_info[1])) for r in caplog.records if r.exc_info] == [
        (f"monitor on_stale {on_stale!r} raised; ignored", "on_stale bug")] * 2


def test_stopping_an_idle_monitor_ends_its_worker(manager):
    """A monitor that has delivered no callback yet (nothing matches) is stopped at once."""
    workers = []
    monitor = manager.attach(Monitor({"no": "match"},
                                     on_stale=lambda stale: workers.append(gevent.getcurrent())))
    eventually(lambda: not monitor.stale)
    manager.detach(monitor)
    eventually(lambda: workers[0].dead)


def test_a_task_can_be_stopped_from_the_hub(manager, caplog):
    """The Task protocol: stop() never blocks, so code that runs in the hub (a
    registration's notify callback, a finalizer) may detach a task."""
    workers = []
    monitor = manager.attach(Monitor(on_stale=lambda stale: workers.append(gevent.getcurrent())))
    eventually(lambda: not monitor.stale)
    detached = []
    gevent.get_hub().loop.run_callback(lambda: detached.append(manager.detach(monitor)))
    eventually(lambda: detached)
    assert monitor.stale and monitor.manager is None
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    eventually(lambda: workers[0].dead)


def test_a_monitor_restarted_during_a_callback_keeps_one_worker(manager, registry_server):
    """Detached and attached again while a callback runs: the old worker leaves after the
    callback, and the new one delivers what comes next."""
    socks = [register(registry_server, b"a k v\n")]
    eventually(lambda: "a" in registry_server.index())
    entered, release = gevent.event.Event(), gevent.event.Event()
    calls = []  # (name, the worker that delivered it)

    def on_add(name, attrs):
        calls.append((name, gevent.getcurrent()))
        if name == "a":
            entered.set()
            release.wait()

    monitor = manager.attach(Monitor({"k": "v"}, on_add=on_add))
    assert entered.wait(5)
    manager.detach(monitor)
    manager.attach(monitor)
    release.set()
    old = calls[0][1]
    eventually(lambda: old.dead)
    socks.append(register(registry_server, b"b k v\n"))
    eventually(lambda: len(calls) == 2)
    assert calls[1][0] == "b" and calls[1][1] is not old
    assert set(monitor.services) == {"a", "b"}
    for sock in socks:
        sock.close()


class QuietEvents(FindOnly):
    """A real connection whose event stream connects but reports no change (as one that
    lags far behind would): only an explicit refresh() makes the tasks look."""

    def open_event(self):
        return _Quiet(self._connection.open_event())

    def find_text(self, attrs=None):
        return self._connection.find_text(attrs)


class _Quiet:
    def __init__(self, stream):
        self._stream = stream
        self._closed = gevent.event.Event()

    def wait(self):
        self._closed.wait()
        raise ConnectionError("event stream closed")

    def close(self):
        self._closed.set()
        self._stream.close()


def test_service_refresh_checks_that_it_is_still_listed(connection_factory, registry_server):
    """The Task protocol's refresh(): "the registry changed" makes a registered Service check
    that it is listed, and register again if it is not."""
    mgr = RegMgr(QuietEvents(connection_factory(registry_server)),
                 backoff=Backoff(initial=0.01, maximum=0.1))
    try:
        svc = mgr.attach(Service("svc", {"a": 1}))
        eventually(lambda: svc.registered)
        entry = registry_server.registry.get("svc")
        registry_server.registry.remove(entry, entry.owner)
        assert registry_server.index() == {} and svc.registered  # no event: nobody looked
        svc.refresh()
        eventually(lambda: registry_server.registry.get("svc") not in (None, entry), timeout=10)
        eventually(lambda: svc.registered)
        assert registry_server.index() == {"svc": {"a": "1"}}
    finally:
        mgr.close()
