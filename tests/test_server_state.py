"""The registry model on its own: rules of registry4.md §3-5, no sockets."""
import pytest

from regmgr.errors import RegistryError
from regmgr.limits import Limits
from regmgr.server.state import Registry, Service, parse_filter, persist_value
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


# -- limits (regmgr.limits) ------------------------------------------------------

def test_a_write_over_a_limit_changes_nothing():
    from regmgr.limits import Limits
    reg = Registry(Limits(attrs=3, value_bytes=8))
    svc = named(reg, "s a 1 b 2")
    version = reg.version
    for text, error in [
        ("c 3 d 4", "4 attributes, over the limit of 3"),
        ("a 123456789", "value of attribute 'a' is 9 bytes, over the 8-byte limit"),
        ("c \x00", "NUL"),
    ]:
        with pytest.raises(RegistryError, match=error):
            reg.write(svc, text)
    assert (svc.attrs, svc.vers, reg.version) == ([("b", "2"), ("a", "1")], 1, version)
    reg.write(svc, "c 3")
    assert svc.attrs == [("c", "3"), ("b", "2"), ("a", "1")]
    # gateway lines that arrive together are one write: many pairs, few attributes
    reg.write(svc, "a 5 b 6\n" * 50)
    assert svc.attrs == [("c", "3"), ("b", "6"), ("a", "5")]


def test_a_first_write_over_a_limit_leaves_the_service_unnamed():
    from regmgr.limits import Limits
    reg = Registry(Limits(attrs=1))
    svc = reg.create("me")
    with pytest.raises(RegistryError, match="2 attributes"):
        reg.write(svc, "s a 1 b 2")
    assert svc.name is None and reg.get("s") is None
    reg.write(svc, "s a 1")
    assert reg.index() == "s a 1\n"


def test_static_services_over_a_limit_are_refused():
    from regmgr.limits import Limits
    reg = Registry(Limits(attrs=1))
    assert not reg.add_static("s", [("a", "1"), ("b", "2")])
    assert reg.add_static("t", [("a", "1")])


def test_attribute_order_quirk_holds_over_many_writes():
    """The dict + order list gives exactly the list model's order (registry4.md §3)."""
    import random
    rng = random.Random(4)
    reg = Registry()
    svc = named(reg, "s")
    model: list = []
    for _ in range(2000):
        attr, value = f"a{rng.randrange(40)}", str(rng.randrange(9))
        names = [a for a, _ in model]
        if attr in names:
            i = names.index(attr)
            model = model[:i][::-1] + [(attr, value)] + model[i + 1:]
        else:
            model.insert(0, (attr, value))
        reg.write(svc, f"{attr} {value}")
        assert svc.attrs == model


def test_kept_line_size_is_the_listing_s():
    reg = Registry()
    svc = named(reg, "s.é a 1 'b c' ''")
    reg.write(svc, "a 'it''s' d é")
    name = len("s.é\n".encode())
    assert svc.size + name == len(reg.index().encode()) == len("s.é d é a 'it''s' 'b c' ''\n".encode())
    reg.write(svc, "a 2")
    assert svc.size + name == len(reg.index().encode())
    svc.attrs = [("x", "1"), ("y", "'")]
    assert svc.line == "s.é x 1 y ''''\n"
    assert svc.size + name == len(svc.line.encode())


# -- the static database (registry4.md §8) ---------------------------------------------

def test_static_services_are_named_and_owned_by_the_registry():
    reg = Registry()
    assert reg.add_static("click", [("auth", "none"), ("description", "snapshot service")])
    svc = reg.get("click")
    assert (svc.name, svc.owner) == ("click", "registry")
    assert parse_services(reg.index()) == {"click": {"auth": "none",
                                                     "description": "snapshot service"}}
    assert reg.version == 1
    assert reg.add_static("other", [], owner="inferno") and reg.get("other").owner == "inferno"
    assert reg.version == 2  # one step per service, as for a named write


@pytest.mark.parametrize("name", ["a/b", "a b", "new", "", "x" * 2000])
def test_static_services_with_a_bad_name_are_refused(name):
    reg = Registry()
    assert not reg.add_static(name, [("a", "1")])
    assert (reg.index(), reg.version, len(reg._slots)) == ("", 0, 0)


def test_a_static_service_of_a_taken_name_is_refused():
    reg = Registry()
    named(reg, "s a 1")
    assert not reg.add_static("s", [("b", "2")])
    assert parse_services(reg.index()) == {"s": {"a": "1"}} and reg.version == 1


def test_subscribers_hear_every_version_until_they_unsubscribe():
    reg = Registry()
    heard, other = [], []
    reg.subscribe(heard.append)
    reg.subscribe(other.append)
    svc = named(reg, "s a 1")
    reg.write(svc, "b 2")
    reg.unsubscribe(heard.append)
    reg.release(svc)
    assert (heard, other) == ([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        reg.unsubscribe(heard.append)  # not subscribed any more


def test_a_filter_of_several_pairs_needs_all_of_them():
    reg = Registry()
    for line in ("a p http port 80", "b p http port 81", "c p ssh port 80"):
        named(reg, line)
    assert set(parse_services(reg.find(parse_filter("p http port 80")))) == {"a"}
    assert set(parse_services(reg.find(parse_filter("port 80 p *")))) == {"a", "c"}
    assert reg.find(parse_filter("p http port 22")) == ""


def test_a_removed_service_leaves_the_attribute_index():
    """A store that still holds a dropped Service may change it: the finds never see it."""
    reg = Registry()
    gone = named(reg, "gone a 1", owner="alice")
    reg.remove(gone, "alice")
    gone.set("a", "2")
    gone.attrs = [("b", "3")]
    kept = named(reg, "kept a 2 b 3")
    assert reg.find(parse_filter("a 2")) == reg.find(parse_filter("b 3")) == kept.line
    assert reg.index() == "kept b 3 a 2\n"


def test_refusals_in_the_registry_s_words():
    """registry4.md §3: the texts a client sees for an empty write and a taken name."""
    reg = Registry()
    named(reg, "s")
    svc = reg.create("me")
    with pytest.raises(RegistryError, match="^bad syntax$"):
        reg.write(svc, " \t\n")
    with pytest.raises(RegistryError, match="^duplicate service name$"):
        reg.write(svc, "s a 1")
    reg.write(svc, "t a 1")
    assert reg.index() == "s\nt a 1\n"


def test_a_service_outside_any_registry_takes_attributes():
    """A store's scratch Service (as the ZooKeeper mirror builds) is in no index."""
    scratch = Service(0, "me", 0)
    scratch.set("a", "1")
    scratch.attrs = [("b", "2"), ("a", "3")]
    assert scratch.attrs == [("b", "2"), ("a", "3")]
    assert not scratch.removed


OVER = "service line is {} bytes, over the 11-byte limit"


@pytest.mark.parametrize("first, later, refused", [
    # the line "s a 1 b 22\n" is 11 bytes: the limit
    ("s a 1 b 22", [], None),
    ("s a 1 b 223", [], OVER.format(12)),
    ("s a 1 b 2", ["b 22"], None),
    ("s a 1 b 2", ["b 223"], OVER.format(12)),
    ("s a 1", ["b 22"], None),
    ("s a 1", ["b 223"], OVER.format(12)),
    ("s a 1 b 22", ["a 2"], None),
    ("s a 1 b 22", ["a 22"], OVER.format(12)),
    ("s a 1 b 22", ["b 2", "c 1"], OVER.format(14)),
    ("s a '' b 2", ["a x"], None),  # '' is 2 bytes of the line, x is 1
    ("s a 1 b 2", ["a 'x y'"], OVER.format(14)),
    ("nnnnnnnnnn", [], None),
    ("nnnnnnnnnnn", [], "service name is 11 bytes, over the 10-byte limit: 'nnnnnnnnnnn'"),
])
def test_the_line_limit_counts_the_listing_line_s_bytes(first, later, refused):
    """Limits(service_bytes=11, name_bytes=10): every write is judged by the line the
    service would be listed as, name, quotes, blanks and newline included."""
    reg = Registry(Limits(name_bytes=10, service_bytes=11))
    svc = reg.create("me")
    writes = [first, *later]
    for i, text in enumerate(writes):
        if i == len(writes) - 1 and refused is not None:
            before = reg.index()
            with pytest.raises(RegistryError) as error:
                reg.write(svc, text)
            assert str(error.value) == refused
            assert reg.index() == before
        else:
            reg.write(svc, text)
    if refused is None:
        assert len(reg.index().encode()) <= 11
