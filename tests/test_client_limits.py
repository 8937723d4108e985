"""Bad names, attributes and filters: ValueError before any I/O, and nothing changed (issue 11).

Each path is tried against a real registry over both transports; the
transports' own checks are also tried against ports where nothing listens,
where any I/O would be a ConnectionError.
"""
import pytest

from regmgr import TCP, Lookup, Monitor, Service, Styx
from serverutil import eventually

# (name, attrs, the start of the error): one case per rule of regmgr.limits,
# the sizes from its stated defaults (1 KiB name, 256 B attribute name, 4 KiB
# value, 128 attributes, 32 KiB line, a quoted pair within one 8168-byte write).
BAD_SERVICES = [
    ("s\udc80", {}, "service name 's\\udc80': not encodable as UTF-8"),
    ("s\x00", {}, "service name 's\\x00': NUL character"),
    ("n" * 1025, {}, "service name is 1025 bytes, over the 1024-byte limit"),
    ("s", {"a\udc80": "1"}, "attribute name 'a\\udc80': not encodable as UTF-8"),
    ("s", {"a\x00": "1"}, "attribute name 'a\\x00': NUL character"),
    ("s", {"a": "\udc80"}, "value of attribute 'a': not encodable as UTF-8"),
    ("s", {"a": "x\x00y"}, "value of attribute 'a': NUL character"),
    ("s", {"k" * 257: "1"}, "attribute name 'kkkk"),
    ("s", {"a": "x" * 4097}, "value of attribute 'a' is 4097 bytes, over the 4096-byte limit"),
    ("s", {f"a{i}": "1" for i in range(129)}, "129 attributes, over the limit of 128"),
    ("s", {f"a{i}": "x" * 4000 for i in range(9)}, "service line is "),
    ("s", {"a": "'" * 4090}, "attribute 'a', quoted, is 8184 bytes, over the 8168-byte limit"),
]
BAD_FILTERS = [attrs for _, attrs, _ in BAD_SERVICES if attrs and len(attrs) == 1]
NOBODY = 1  # a port where nothing listens: any I/O would be a ConnectionError


@pytest.mark.parametrize("name, attrs, error", BAD_SERVICES)
def test_service_refuses_before_io(name, attrs, error):
    with pytest.raises(ValueError) as caught:
        Service(name, attrs)
    assert str(caught.value).startswith(error)


def test_the_largest_service_within_limits_is_accepted(manager, registry_server):
    attrs = {f"a{i}": "x" * 4000 for i in range(8)}  # 32,0xx bytes: just under the line limit
    svc = manager.attach(Service("big", attrs))
    eventually(lambda: svc.registered)
    assert registry_server.index() == {"big": attrs}


@pytest.mark.parametrize("update, error", [
    ({"b": "\udc80"}, "value of attribute 'b': not encodable"),
    ({"a": "x\x00"}, "value of attribute 'a': NUL character"),
    ({"a": "x" * 5000}, "value of attribute 'a' is 5000 bytes"),
    # Each value fits; the merged service does not.
    ({f"more{i}": "y" * 4000 for i in range(3)}, "service line is "),
    ({f"more{i}": "1" for i in range(122)}, "129 attributes"),
])
def test_refused_update_changes_nothing(manager, registry_server, update, error):
    attrs = {"a": "1", **{f"big{i}": "x" * 4000 for i in range(6)}}
    svc = manager.attach(Service("svc", attrs))
    eventually(lambda: svc.registered)
    with pytest.raises(ValueError, match=error):
        svc.update(update)
    assert svc.attrs == attrs
    svc.update({"a": "2"})  # the registration still takes updates
    attrs["a"] = "2"
    eventually(lambda: registry_server.index() == {"svc": attrs})
    assert svc.registered
    # The refused value is not kept for the next registration either.
    registry_server.stop()
    eventually(lambda: not svc.registered)
    registry_server.start()
    eventually(lambda: svc.registered and registry_server.index() == {"svc": attrs})


@pytest.mark.parametrize("attrs", BAD_FILTERS)
def test_monitor_and_lookup_refuse_bad_filters(attrs):
    with pytest.raises(ValueError):
        Monitor(attrs)
    with pytest.raises(ValueError):
        Lookup(attrs)


def test_manager_lookup_refuses_a_bad_filter_and_attaches_nothing(manager):
    with pytest.raises(ValueError, match="NUL character"):
        manager.lookup({"a": "\x00"}, timeout=5)
    assert manager.tasks == []
    assert manager.lookup({"a": "1"}, timeout=5) == {}


@pytest.mark.parametrize("name, attrs, error", BAD_SERVICES)
def test_transports_refuse_before_io(name, attrs, error):
    for connection in (TCP("127.0.0.1", NOBODY, NOBODY, NOBODY), Styx("127.0.0.1", NOBODY)):
        with pytest.raises(ValueError) as caught:
            connection.open_new(name, attrs)
        assert str(caught.value).startswith(error)
        if len(attrs) == 1:
            with pytest.raises(ValueError):
                connection.find(attrs)


@pytest.mark.parametrize("attrs", BAD_FILTERS)
def test_registration_update_refused_keeps_it(connection_factory, registry_server, attrs):
    connection = connection_factory(registry_server)
    registration = connection.open_new("svc", {"a": "1"})
    try:
        with pytest.raises(ValueError):
            registration.update(attrs)
        with pytest.raises(ValueError):
            connection.find(attrs)
        registration.update({"a": "2"})
        eventually(lambda: connection.find() == {"svc": {"a": "2"}})
    finally:
        registration.close()
