"""Registry.find through the attribute index: the same listing, in slot order, as a full walk."""
from hypothesis import given, settings
from hypothesis import strategies as st

from regmgr.errors import RegistryError
from regmgr.server import state
from regmgr.server.state import Registry


def walk(registry, pairs):
    """What a find must list: every named service matching all pairs, in slot order."""
    return "".join(svc.line for svc in registry.services() if svc.matches(pairs))


attrs = st.sampled_from(["a", "b", "c"])
values = st.sampled_from(["1", "2", "3"])
steps = st.lists(st.one_of(
    st.tuples(st.just("new"), st.integers(0, 7), st.lists(st.tuples(attrs, values), max_size=3)),
    st.tuples(st.just("write"), st.integers(0, 7), st.lists(st.tuples(attrs, values), max_size=3)),
    st.tuples(st.just("drop"), st.integers(0, 7), st.just([])),
), max_size=30)
filters = st.lists(st.tuples(attrs, st.sampled_from(["1", "2", "3", "*"])), min_size=1,
                   max_size=3)


@settings(max_examples=200)
@given(steps, st.lists(filters, min_size=1, max_size=4))
def test_every_find_matches_a_full_walk(steps, queries):
    registry = Registry()
    live = {}
    for op, key, pairs in steps:
        words = " ".join(f"{a} {v}" for a, v in pairs)
        if op == "new" and key not in live:
            live[key] = svc = registry.create("me")
            registry.write(svc, f"s{key} {words}")
        elif op == "write" and key in live and pairs:
            registry.write(live[key], words)
        elif op == "drop" and key in live:
            registry.release(live.pop(key))
        for pairs in queries:
            assert registry.find(pairs) == walk(registry, pairs)


def test_a_selective_find_in_a_large_table():
    registry = Registry()
    for i in range(1000):
        registry.write(registry.create("me"), f"s{i} shard {i % 10} all x")
    for i in range(0, 1000, 3):
        registry.release(registry.get(f"s{i}"))
    for pairs in ([("shard", "7")], [("all", "x")], [("shard", "*"), ("all", "x")],
                  [("shard", "7"), ("all", "y")], [("none", "*")]):
        assert registry.find(pairs) == walk(registry, pairs)
    assert registry.find([("shard", "7")]).count("\n") == len(
        [i for i in range(1000) if i % 10 == 7 and i % 3])


def test_replaced_attributes_leave_the_index():
    registry = Registry()
    svc = registry.create("me")
    registry.write(svc, "s a 1")
    svc.attrs = [("b", "2")]
    assert registry.find([("a", "1")]) == "" and registry.find([("b", "2")]) == "s b 2\n"


kept_steps = st.lists(st.one_of(
    st.tuples(st.just("new"), st.integers(0, 5), st.lists(st.tuples(attrs, values), max_size=3)),
    st.tuples(st.just("odd"), st.integers(0, 5), st.just([])),  # named by a refused write
    st.tuples(st.just("write"), st.integers(0, 5), st.lists(st.tuples(attrs, values), max_size=3)),
    st.tuples(st.just("replace"), st.integers(0, 5), st.lists(st.tuples(attrs, values), max_size=3)),
    st.tuples(st.just("static"), st.integers(0, 5), st.lists(st.tuples(attrs, values), max_size=3)),
    st.tuples(st.just("drop"), st.integers(0, 5), st.just([])),
), max_size=25)


@settings(max_examples=200)
@given(kept_steps, st.lists(st.one_of(filters, st.just([])), min_size=1, max_size=4))
def test_kept_listings_follow_every_change(steps, queries):
    """Finds asked again and again (answered from memory while nothing changed) stay exact."""
    check_kept_listings(steps, queries)


@settings(max_examples=200)
@given(kept_steps, st.lists(st.one_of(filters, st.just([])), min_size=1, max_size=4))
def test_kept_blocks_follow_every_change(steps, queries):
    """The same with full listings joined from blocks of two slots (many blocks)."""
    block = state._BLOCK
    state._BLOCK = 2
    try:
        check_kept_listings(steps, queries)
    finally:
        state._BLOCK = block


def check_kept_listings(steps, queries):
    registry = Registry()
    live = {}
    for op, key, pairs in steps:
        words = " ".join(f"{a} {v}" for a, v in pairs)
        if op in ("new", "odd") and key not in live:
            live[key] = svc = registry.create("me")
            try:
                registry.write(svc, f"s{key} {words}" + (" x" if op == "odd" else ""))
            except RegistryError:
                pass
        elif op == "write" and key in live and pairs:
            registry.write(live[key], words)  # a value written again reorders (Inferno's quirk)
        elif op == "replace" and key in live:
            live[key].attrs = pairs  # what the ZooKeeper mirror does
        elif op == "static":
            registry.add_static(f"static{key}", pairs)
        elif op == "drop" and key in live:
            registry.release(live.pop(key))
        for query in queries:
            assert registry.find(query) == walk(registry, query)


def test_removed_services_are_not_kept_for_the_next_full_listing():
    """Selective finds only, registrations coming and going: nothing removed stays held."""
    registry = Registry()
    registry.write(registry.create("me"), "kept b 1")
    for i in range(100):
        svc = registry.create("me")
        registry.write(svc, f"s{i} a 1")
        assert registry.find([("a", "1")]) == f"s{i} a 1\n"
        registry.release(svc)
        assert registry.find([("a", "1")]) == ""
    assert len(registry._index.touched) <= 1  # "kept" at most


def test_unnamed_services_never_appear():
    """registry4.md §4: services opened on ``new`` and not yet named are in no listing."""
    registry = Registry()
    first = registry.create("me")
    registry.write(first, "s1 a 1")
    registry.create("me")  # opened, never written
    refused = registry.create("me")
    try:
        registry.write(refused, "index a 1")  # bad service name: stays unnamed (§3)
    except RegistryError:
        pass
    registry.write(registry.create("me"), "s2 a 1")
    assert registry.index() == "s1 a 1\ns2 a 1\n"
    assert registry.find([("a", "1")]) == "s1 a 1\ns2 a 1\n"
    registry.write(refused, "s3 a 2")  # named at last: listed in its slot
    assert registry.index() == "s1 a 1\ns3 a 2\ns2 a 1\n"


def computing(registry, monkeypatch):
    """The filters ``registry`` computes a listing for (not answered from memory), in order."""
    computed = []
    listing = registry._listing

    def counted(pairs):
        computed.append(tuple(pairs))
        return listing(pairs)

    monkeypatch.setattr(registry, "_listing", counted)
    return computed


def test_a_find_asked_again_of_an_unchanged_registry_is_answered_from_memory(monkeypatch):
    """Monitors all find after each event, often with one filter: computed once per change."""
    registry = Registry()
    svc = registry.create("me")
    registry.write(svc, "s a 1 b 2 c 3")
    registry.write(registry.create("me"), "t a 1")
    computed = computing(registry, monkeypatch)
    for _ in range(3):
        assert registry.find([("a", "1")]) == "s c 3 b 2 a 1\nt a 1\n"
        assert registry.find([]) == "s c 3 b 2 a 1\nt a 1\n"
    assert computed == [(("a", "1"),), ()]
    registry.write(svc, "a 1")  # the same value, but the order changes (registry4.md §3)
    assert registry.find([("a", "1")]) == "s b 2 c 3 a 1\nt a 1\n"
    assert registry.find([("a", "1")]) == "s b 2 c 3 a 1\nt a 1\n"
    assert computed == [(("a", "1"),), (), (("a", "1"),)]


def one_line_filters(registry, count):
    """``count`` filters each listing one service of ``registry``: a line of 9 characters."""
    for i in range(count):
        registry.write(registry.create("me"), f"s{i:02} k {i:02}")
    return [[("k", f"{i:02}")] for i in range(count)]


def test_kept_listings_stay_within_both_caps(monkeypatch):
    """However many filters are asked, what is kept for them stays within its caps."""
    registry = Registry()
    queries = one_line_filters(registry, 12)
    for finds, chars in ((3, 1000), (1000, 30)):
        monkeypatch.setattr(state, "_CACHED_FINDS", finds)
        monkeypatch.setattr(state, "_CACHED_CHARS", chars)
        registry.write(registry.get("s00"), "x 1")  # a change: nothing kept
        for _ in range(2):
            for i, query in enumerate(queries):
                assert registry.find(query) == walk(registry, query)
                kept = registry._found
                assert len(kept) <= finds and sum(map(len, kept.values())) <= chars, (i, kept)


def test_listings_that_fill_the_character_cap_exactly_are_all_kept(monkeypatch):
    """At most 27 characters kept: three 9-character listings fit, a fourth starts anew."""
    registry = Registry()
    queries = one_line_filters(registry, 6)
    monkeypatch.setattr(state, "_CACHED_CHARS", 27)
    computed = computing(registry, monkeypatch)
    for group in (queries[:3], queries[3:]):  # the second after the cap dropped the first
        for _ in range(2):
            for query in group:
                assert registry.find(query) == walk(registry, query)
    assert computed == [tuple(query) for query in queries]


def test_more_filters_than_are_kept_still_list_right():
    registry = Registry()
    queries = one_line_filters(registry, 100)
    for _ in range(2):
        for query in queries + [[("k", "*")], []]:
            assert registry.find(query) == walk(registry, query)
