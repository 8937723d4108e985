"""The registry model on its own: rules of registry4.md §3-5, no sockets."""
import pytest

from regmgr.errors import RegistryError
from regmgr.server.state import Registry, parse_filter, persist_value
from regmgr.wire import parse_services


def named(reg, text, owner="me"):
    svc = reg.create(owner)
    reg.write(svc, text)
    return svc


def test_attribute_order_quirk():
    reg = Registry()
    svc = named(reg, "s z 1")
    reg.write(svc, "a 1")
    reg.write(svc, "y 1")
    reg.write(svc, "x 1")
    assert [a for a, _ in svc.attrs] == ["x", "y", "a", "z"]
    reg.write(svc, "a 2")
    assert svc.attrs == [("y", "1"), ("x", "1"), ("a", "2"), ("z", "1")]
    assert reg.index() == "s y 1 x 1 a 2 z 1\n"


def test_version_counts_named_writes_and_removals():
    reg = Registry()
    svc = reg.create("me")
    assert reg.version == 0
    reg.write(svc, "s")
    reg.write(svc, "a 1 b 2")
    assert reg.version == 2
    reg.release(svc)
    assert reg.version == 3
    unnamed = reg.create("me")
    reg.release(unnamed)
    assert reg.version == 3


def test_failed_first_write_with_odd_pairs_still_names():
    reg = Registry()
    svc = reg.create("me")
    with pytest.raises(RegistryError, match="^odd attribute/value pairs$"):
        reg.write(svc, "s a")
    assert svc.name == "s" and "s" in parse_services(reg.index())


@pytest.mark.parametrize("value, persists", [
    ("1", True), ("0", False), ("abc", False), ("2x", True), (" 7", True), ("-1", True), ("", False),
])
def test_persist_rule(value, persists):
    assert (persist_value(value) != 0) == persists
    reg = Registry()
    svc = reg.create("me")
    reg.write(svc, f"s persist '{value}'")
    reg.release(svc)
    assert (reg.get("s") is not None) == persists


def test_orclose_removes_persistent():
    reg = Registry()
    svc = named(reg, "s persist 1")
    reg.release(svc, force=True)
    assert reg.get("s") is None


def test_remove_only_by_owner():
    reg = Registry()
    svc = named(reg, "s persist 1", owner="alice")
    with pytest.raises(RegistryError, match="^permission denied$"):
        reg.remove(svc, "bob")
    reg.remove(svc, "alice")
    assert reg.get("s") is None
    with pytest.raises(RegistryError, match="^buggy program!$"):
        reg.write(svc, "a 1")


def test_listing_order_moves_last_into_freed_slot():
    reg = Registry()
    a, b, c = (named(reg, n) for n in "abc")
    reg.release(a)
    assert reg.index() == "c\nb\n"


def test_filters():
    reg = Registry()
    named(reg, "s1 proto http port 80")
    named(reg, "s2 proto HTTP")
    named(reg, "s3 port 81")
    assert set(parse_services(reg.find(parse_filter("proto http")))) == {"s1"}
    assert set(parse_services(reg.find(parse_filter("proto *")))) == {"s1", "s2"}
    assert set(parse_services(reg.find(parse_filter("")))) == {"s1", "s2", "s3"}
    assert set(parse_services(reg.find(parse_filter("proto * port 80")))) == {"s1"}
    with pytest.raises(RegistryError, match="^odd attribute/value pairs$"):
        parse_filter("proto")


def test_watcher_coalesces():
    reg = Registry()
    watcher = reg.watch()
    assert watcher.poll() is None
    svc = named(reg, "s")
    reg.write(svc, "a 1")
    reg.write(svc, "a 2")
    assert watcher.poll() == 3
    assert watcher.poll() is None
