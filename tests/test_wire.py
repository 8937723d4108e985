"""The registry text format: quoting, unquoting and service listings."""
import pytest
from hypothesis import given, strategies as st

from regmgr.errors import ProtocolError
from regmgr.wire import (
    format_attrs, format_service, normalize_attrs, parse_services, quote,
    service_name_error, unquote,
)

words = st.text()
names = st.text(min_size=1)


@pytest.mark.parametrize("word, quoted", [
    ("", "''"),
    ("abc", "abc"),
    ("a b", "'a b'"),
    ("it's", "'it''s'"),
    ("x\ny", "'x\ny'"),
    ("tab\there", "'tab\there'"),
    ("\x01", "'\x01'"),
    ("\x7f", "\x7f"),
    ("ünïcødé!/", "ünïcødé!/"),
    ("'", "''''"),
])
def test_quote_examples(word, quoted):
    assert quote(word) == quoted


@pytest.mark.parametrize("text, expected", [
    ("", []),
    ("  \t\n ", []),
    ("a b\tc\nd", ["a", "b", "c", "d"]),
    ("a\rb", ["a\rb"]),
    ("''", [""]),
    ("'a b' c", ["a b", "c"]),
    ("'it''s'", ["it's"]),
    ("a'b c'd", ["ab cd"]),
    ("'x\ny' z", ["x\ny", "z"]),
    ("a 'b c", ["a", "b c"]),
    ("'", [""]),
    ("a'", ["a"]),
    ("''''", ["'"]),
])
def test_unquote_examples(text, expected):
    assert unquote(text) == expected


@given(words)
def test_unquote_inverts_quote(word):
    assert unquote(quote(word)) == [word]


@given(st.lists(words))
def test_unquote_inverts_quoted_sequence(ws):
    assert unquote(" ".join(quote(w) for w in ws)) == ws


@given(st.text())
def test_unquote_total(text):
    assert all(isinstance(w, str) for w in unquote(text))


@given(st.dictionaries(names, st.dictionaries(words, words)))
def test_parse_services_round_trip(services):
    text = "".join(format_service(n, a) for n, a in services.items())
    assert parse_services(text) == services


def test_format():
    assert format_attrs({"a": "1", "b c": ""}) == "a 1 'b c' ''"
    assert format_service("svc", {}) == "svc\n"
    assert format_service("s", {"k": "x\ny"}) == "s k 'x\ny'\n"


@pytest.mark.parametrize("text", [
    "svc a 1",            # no final newline
    "svc a\n",            # odd attributes
    "\n",                 # empty line
    "svc 'a\n",           # unterminated quote
    "a\na\n",             # listed twice
    "svc\ta\n",           # odd attributes, tab-separated
])
def test_parse_services_rejects(text):
    with pytest.raises(ProtocolError) as info:
        parse_services(text)
    assert info.value.data is not None


@given(st.text())
def test_parse_services_garbage_only_protocol_error(text):
    try:
        parse_services(text)
    except ProtocolError:
        pass


@pytest.mark.parametrize("name, error", [
    ("tcp!host!80", None),
    (".", None),
    ("..", None),
    ("a b", "bad character in service name"),
    ("a/b", "bad character in service name"),
    ("a\x7f", "bad character in service name"),
    ("a\x00", "bad character in service name"),
    ("", "bad service name"),
    ("new", "bad service name"),
    ("index", "bad service name"),
    ("find", "bad service name"),
    ("event", "bad service name"),
])
def test_service_name_error(name, error):
    assert service_name_error(name) == error


def test_normalize_attrs():
    assert normalize_attrs(None) == {}
    assert normalize_attrs({"a": 1, "b": 2.5, "c": "x"}) == {"a": "1", "b": "2.5", "c": "x"}
    for bad, says in (({"a": None}, "value of attribute 'a' must be str or a number, not NoneType"),
                      ({"a": True}, "value of attribute 'a' must be str or a number, not bool"),
                      ({"a": b"x"}, "value of attribute 'a' must be str or a number, not bytes"),
                      ({1: "x"}, "attribute name must be str, not int: 1")):
        with pytest.raises(TypeError) as error:
            normalize_attrs(bad)
        assert str(error.value) == says  # a clear error names the culprit
    with pytest.raises(TypeError, match="^attributes must be a mapping, not list$"):
        normalize_attrs([("a", "b")])


@given(st.text(alphabet=st.sampled_from(" \t\n\r\x0b\x0c\x1c\x1fab\u00e9\u2028\x85\x00")))
def test_unquote_fast_path_is_inferno_s_scan(text):
    from regmgr.wire import _unquote_balanced
    assert unquote(text) == _unquote_balanced(text)[0]


@pytest.mark.parametrize("text, says", [
    ("s a\n", "malformed service line: 's a\\n'"),
    ("'s' a\n", "malformed service line: \"'s' a\\n\""),
    ("s\ns\n", "service listed twice: 's\\n'"),
    ("'s'\n's'\n", "service listed twice: \"'s'\\n\""),
    ("s a b", "service listing does not end with a newline: 's a b'"),
    ("'s' a b", "service listing does not end with a newline: \"'s' a b\""),
    # cut after a whole line, whatever the fragment (mutmut's marker XXXX included)
    ("s\nt", "service listing does not end with a newline: 't'"),
    ("s\nXXXX", "service listing does not end with a newline: 'XXXX'"),
    # lines of one width (wire._parse_same_width) name the line at fault too
    ("a k 1\na k 2\n", "service listed twice: 'a k 2\\n'"),
    ("a  1\nb k 2\n", "malformed service line: 'a  1\\n'"),
    ("a k\nb l\n", "malformed service line: 'a k\\n'"),
])
def test_bad_listings_say_what_is_wrong(text, says):
    # plain and quoted listings take different paths: both name the fault
    with pytest.raises(ProtocolError) as error:
        parse_services(text)
    assert str(error.value) == says


@pytest.mark.parametrize("text, services", [
    ("svc\ta\t1\n", {"svc": {"a": "1"}}),
    ("svc a\t1\nt\n", {"svc": {"a": "1"}, "t": {}}),
    ("svc  a 1\n", {"svc": {"a": "1"}}),
    # other white space is part of a word: %q quotes only characters <= U+0020
    ("svc note a\xa0b\u2003c\n", {"svc": {"note": "a\xa0b\u2003c"}}),
    ("svc note a\x85b\u3000c\n", {"svc": {"note": "a\x85b\u3000c"}}),
])
def test_listing_words_split_on_blank_tab_and_newline_only(text, services):
    """registry4.md §2: words are separated by blank, tab or newline, and nothing else."""
    assert parse_services(text) == services


# -- a listing whose lines all hold the same number of words (wire._parse_same_width) --

def _no_line_loop(monkeypatch):
    """Make the per-line parser fail, so a test sees which path a listing takes."""
    import regmgr.wire

    def refuse(lines):
        raise AssertionError(f"parsed line by line: {lines!r}")
    monkeypatch.setattr(regmgr.wire, "_parse_lines", refuse)


@pytest.mark.parametrize("text, services", [
    ("a k 1 l 2 m 3\nb k 4 l 5 m 6\n", {"a": {"k": "1", "l": "2", "m": "3"},
                                        "b": {"k": "4", "l": "5", "m": "6"}}),
    ("a k 1\nb l 2\nc m 3\n", {"a": {"k": "1"}, "b": {"l": "2"}, "c": {"m": "3"}}),
    ("a\nb\n", {"a": {}, "b": {}}),
])
def test_lines_of_one_width_are_parsed_without_a_loop_per_line(monkeypatch, text, services):
    from regmgr.wire import _parse_plain
    _no_line_loop(monkeypatch)
    parsed = _parse_plain(text)
    assert parsed == services
    assert list(parsed) == list(services)  # in listing order


def test_lines_of_other_widths_are_parsed_one_by_one():
    from regmgr.wire import _parse_plain
    assert _parse_plain("a k 1\nb\nc k 2 l 3\n") == {"a": {"k": "1"}, "b": {}, "c": {"k": "2", "l": "3"}}


@pytest.mark.parametrize("lines, width", [
    (["a k 1", "a k 2"], 3),     # a name listed twice
    (["a  1", "b k 2"], 3),      # an empty word
    (["a k", "b l"], 2),         # an even number of words
    (["a k 1 l", "b k 2 l"], 4),
])
def test_one_width_refuses_what_the_line_loop_refuses(lines, width):
    from regmgr.wire import _parse_lines, _parse_same_width
    assert _parse_same_width(lines, width) is None
    assert _parse_lines(lines) is None


@given(st.integers(min_value=0, max_value=5).flatmap(lambda blanks: st.lists(
    st.lists(st.text(alphabet="ab", max_size=2), min_size=blanks + 1, max_size=blanks + 1)
    .map(" ".join), min_size=1, max_size=8).map(lambda lines: (lines, blanks + 1))))
def test_one_width_agrees_with_the_line_loop(case):
    from regmgr.wire import _parse_lines, _parse_same_width
    lines, width = case
    assert _parse_same_width(lines, width) == _parse_lines(lines)
