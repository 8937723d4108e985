"""ListingParser: successive listings parsed by their changed lines, same result as a full parse."""
import gevent
import pytest
from hypothesis import given
from hypothesis import strategies as st

from regmgr.errors import ProtocolError
from regmgr.listing import ListingParser
from regmgr.tasks.monitor import Monitor
from regmgr.wire import format_service, parse_services


def test_only_changed_lines_are_named_and_unchanged_attrs_are_kept():
    parser = ListingParser()
    first, changed = parser.parse("a x 1\nb x 2\nc x 3\n")
    assert changed is None and first == {"a": {"x": "1"}, "b": {"x": "2"}, "c": {"x": "3"}}
    a = first["a"]
    found, changed = parser.parse("a x 1\nb x 9\nd x 4\ne x 5\n")
    assert found == {"a": {"x": "1"}, "b": {"x": "9"}, "d": {"x": "4"}, "e": {"x": "5"}}
    assert sorted(changed) == ["b", "c", "d", "e"] and changed.index("d") < changed.index("e")
    assert found["a"] is a  # unchanged: the same dict, told apart by identity


@pytest.mark.parametrize("text", ["a x 1\na x 2\n", "a x 1\na x 1\n", "a x\n", "a x 1"])
def test_a_malformed_listing_raises_and_the_next_is_parsed_whole(text):
    parser = ListingParser()
    parser.parse("a x 1\n")
    with pytest.raises(ProtocolError):
        parser.parse(text)
    assert parser.parse("a x 1\n") == ({"a": {"x": "1"}}, None)


def test_quoted_listings_are_parsed_whole():
    parser = ListingParser()
    parser.parse("a x 1\n")
    assert parser.parse("a x 'two\nlines'\n") == ({"a": {"x": "two\nlines"}}, None)


names = st.sampled_from(["a", "b", "c", "d", "e"])
values = st.sampled_from(["1", "2", "3", "x y", "it's"])
listings = st.dictionaries(names, st.dictionaries(st.sampled_from(["k", "l"]), values, max_size=2),
                           max_size=5)


@given(st.lists(listings, min_size=1, max_size=6))
def test_same_services_as_a_full_parse_and_every_difference_named(sequence):
    parser = ListingParser()
    before = None
    for services in sequence:
        text = "".join(format_service(name, attrs) for name, attrs in services.items())
        found, changed = parser.parse(text)
        assert found == parse_services(text) == services
        if changed is not None:
            differing = {n for n in set(found) | set(before) if found.get(n) != before.get(n)}
            assert differing <= set(changed)
        before = {name: dict(attrs) for name, attrs in found.items()}


def _monitor(events):
    monitor = Monitor({}, settle=0.0,
                      on_add=lambda n, a: events.append(("add", n, a)),
                      on_mod=lambda n, a: events.append(("mod", n, a)),
                      on_del=lambda n, a: events.append(("del", n, a)))
    monitor._greenlet = gevent.getcurrent()  # _apply delivers only in the task's greenlet
    return monitor


@given(st.lists(listings, min_size=1, max_size=8))
def test_a_monitor_reports_the_same_changes_from_changed_lines_as_from_whole_listings(sequence):
    whole_events, line_events = [], []
    whole, by_line, parser = _monitor(whole_events), _monitor(line_events), ListingParser()
    for services in sequence:
        text = "".join(format_service(name, attrs) for name, attrs in services.items())
        whole._apply(parse_services(text), None)
        by_line._apply(*parser.parse(text))
        assert sorted(line_events) == sorted(whole_events)
        assert by_line.services == whole.services
        assert by_line._missing == whole._missing
        whole_events.clear()
        line_events.clear()


edits = st.lists(st.tuples(st.sampled_from(["set", "add", "drop", "move"]),
                           st.integers(0, 39), st.sampled_from(["1", "22", "x", "4444"])),
                 min_size=1, max_size=4)


@given(st.lists(edits, min_size=1, max_size=5))
def test_a_few_edits_in_a_long_listing_are_found_between_its_common_head_and_tail(rounds):
    """Changed lines anywhere (first, last, next to each other, moved) are all found."""
    services = {f"s{i}": {"k": str(i % 3)} for i in range(0, 40, 2)}
    parser = ListingParser()
    parser.parse("".join(format_service(name, attrs) for name, attrs in services.items()))
    for round_ in rounds:
        before = {name: dict(attrs) for name, attrs in services.items()}
        for op, i, value in round_:
            name = f"s{i}"
            if op == "drop":
                services.pop(name, None)
            elif op == "move" and name in services:
                services[name] = services.pop(name)  # to the end of the listing
            elif op == "set" or op == "add":
                services[name] = {**services.get(name, {}), "k": value}
        text = "".join(format_service(name, attrs) for name, attrs in services.items())
        found, changed = parser.parse(text)
        assert found == services
        differing = {n for n in set(found) | set(before) if found.get(n) != before.get(n)}
        assert differing <= set(changed)


@pytest.mark.parametrize("where", [0, 1, 777, 1998, 1999])
def test_one_change_in_a_listing_of_many_chunks_is_that_service(where):
    services = {f"svc{i}": {"proto": "bench", "seq": str(i)} for i in range(2000)}
    parser = ListingParser()
    parser.parse("".join(format_service(name, attrs) for name, attrs in services.items()))
    services[f"svc{where}"] = {"proto": "bench", "seq": f"{where}0"}  # the line grows by one
    found, changed = parser.parse("".join(format_service(n, a) for n, a in services.items()))
    assert changed == [f"svc{where}"] and found == services
    del services[f"svc{where}"]
    found, changed = parser.parse("".join(format_service(n, a) for n, a in services.items()))
    assert changed == [f"svc{where}"] and found == services


def test_scattered_changes_in_place_are_exactly_the_changed_services():
    services = {f"svc{i}": {"proto": "bench", "seq": str(i)} for i in range(3000)}
    parser = ListingParser()
    parser.parse("".join(format_service(name, attrs) for name, attrs in services.items()))
    touched = [0, 1, 2, 500, 501, 1999, 2998, 2999]  # neighbours, the first and the last
    for k, i in enumerate(touched):
        services[f"svc{i}"] = {"proto": "bench", "seq": "x" * (k + 1)}  # shorter, longer
    found, changed = parser.parse("".join(format_service(n, a) for n, a in services.items()))
    assert found == services and sorted(changed) == sorted(f"svc{i}" for i in touched)


suffixed = st.sampled_from(["b", "ab", "bab", "x", "xb"])


@given(st.lists(st.lists(st.tuples(suffixed, st.sampled_from(["1", "b 1", "ab"])),
                         max_size=6), min_size=2, max_size=6))
def test_names_and_values_that_end_alike_never_cut_a_line(sequence):
    """Texts whose ends agree inside a line: the walk still takes whole lines."""
    parser = ListingParser()
    for pairs in sequence:
        services = {}
        for name, value in pairs:
            services.setdefault(name, {"k": value})
        text = "".join(format_service(name, attrs) for name, attrs in services.items())
        found, _ = parser.parse(text)
        assert found == services
