"""The three-port gateway over real sockets: every fact of registry4.md §2-6."""
import gevent
import gevent.socket
import pytest

from regmgr.server.tcp import TCPGateway
from regmgr.server.state import Registry
from regmgr.testing import RegistryServer

from serverutil import closed_by_server, connect, eventually, find, find_raw, register


def registered(server, name):
    return name in find(server)


def connections_handled(server):
    """True once the gateway has finished with every connection (closes included)."""
    return not server._gateway._clients


# -- §2 text format -----------------------------------------------------------

def test_output_quoting(registry_server):
    sock = register(registry_server, "s e '' sp 'a b' q 'it''s' nl 'x\ny' u ünï tab 'a\tb'\n".encode())
    eventually(lambda: registered(registry_server, "s"))
    raw = find_raw(registry_server).decode()
    assert raw.startswith("s ")
    for piece in ("e ''", "sp 'a b'", "q 'it''s'", "nl 'x\ny'", "u ünï", "tab 'a\tb'"):
        assert piece in raw
    assert find(registry_server)["s"] == {"e": "", "sp": "a b", "q": "it's", "nl": "x\ny",
                                          "u": "ünï", "tab": "a\tb"}
    sock.close()


def test_input_unquoting(registry_server):
    sock = register(registry_server, b"s a'b c'd 'v w' cr x\ry\n")
    eventually(lambda: registered(registry_server, "s"))
    assert find(registry_server)["s"] == {"ab cd": "v w", "cr": "x\ry"}
    sock.close()


def test_unbalanced_quote_is_closed_at_end_of_input(registry_server):
    sock = register(registry_server, b"s last 'open value\n")
    eventually(lambda: registered(registry_server, "s"))
    assert find(registry_server)["s"] == {"last": "open value\n"}
    sock.close()


def test_lone_quote_is_a_bad_name(registry_server):
    sock = register(registry_server, b"'\n")  # unquotes to the name "\n"
    assert closed_by_server(sock)


def test_partial_line_waits_for_its_newline(registry_server):
    sock = register(registry_server, b"s a 'x")
    gevent.sleep(0.05)
    assert not registered(registry_server, "s")
    sock.sendall(b" y'\n")
    eventually(lambda: find(registry_server).get("s") == {"a": "x y"})
    sock.close()


def test_last_partial_line_is_written_at_eof(registry_server):
    sock = register(registry_server, b"s persist 1")
    sock.shutdown(gevent.socket.SHUT_WR)
    eventually(lambda: registered(registry_server, "s"))
    sock.close()


# -- §3 registering -----------------------------------------------------------

@pytest.mark.parametrize("line", [
    b"a\x01b x y\n", b"a/b\n", b"a\x7fb\n", b"a\x00b\n", b"'a b'\n",
    b"new\n", b"event\n", b"find\n", b"index\n", b"''\n", b"\n", b"   \n",
])
def test_refused_names_close_the_connection(registry_server, line):
    sock = register(registry_server, line)
    assert closed_by_server(sock)
    assert find(registry_server) == {}


def test_duplicate_name_closes_the_second(registry_server):
    first = register(registry_server, b"dup a 1\n")
    eventually(lambda: registered(registry_server, "dup"))
    second = register(registry_server, b"dup a 2\n")
    assert closed_by_server(second)
    assert find(registry_server) == {"dup": {"a": "1"}}
    assert not closed_by_server(first, timeout=0.2)


def test_odd_pairs_close_and_unregister(registry_server):
    sock = register(registry_server, b"s a 1\n")
    eventually(lambda: registered(registry_server, "s"))
    sock.sendall(b"b\n")
    assert closed_by_server(sock)
    eventually(lambda: not registered(registry_server, "s"))


def test_empty_update_unregisters(registry_server):
    sock = register(registry_server, b"s a 1\n")
    eventually(lambda: registered(registry_server, "s"))
    sock.sendall(b"\n")
    assert closed_by_server(sock)
    eventually(lambda: not registered(registry_server, "s"))


def test_updates_add_and_change_in_inferno_order(registry_server):
    sock = register(registry_server, b"s z 1\n")
    eventually(lambda: registered(registry_server, "s"))
    for line in (b"a 1\n", b"y 1\n", b"x 1\n", b"a 2\n"):
        sock.sendall(line)  # one write each: wait until it is applied
        attr, value = line.split()
        eventually(lambda: find(registry_server)["s"].get(attr.decode()) == value.decode())
    assert find_raw(registry_server) == b"s y 1 x 1 a 2 z 1\n"
    sock.close()


@pytest.mark.parametrize("first, later, persists", [
    (b"s persist 1\n", b"", True),
    (b"s persist 0\n", b"", False),
    (b"s persist abc\n", b"", False),
    (b"s a 1\n", b"persist 1\n", True),
    (b"s\n", b"", False),
])
def test_lifetime_and_persist(registry_server, first, later, persists):
    sock = register(registry_server, first)
    if later:
        eventually(lambda: registered(registry_server, "s"))
        sock.sendall(later)
        eventually(lambda: "persist" in find(registry_server).get("s", {}))
    eventually(lambda: registered(registry_server, "s"))
    sock.close()
    eventually(lambda: connections_handled(registry_server))
    assert registered(registry_server, "s") == persists


def test_dot_names_are_accepted(registry_server):
    socks = [register(registry_server, b".\n"), register(registry_server, b"..\n")]
    eventually(lambda: set(find(registry_server)) == {".", ".."})
    for sock in socks:
        sock.close()


def test_lines_arriving_together_are_one_write(registry_server):
    events = connect(registry_server.event_port)
    assert events.recv(6) == b"READY\n"
    sock = register(registry_server, b"s a 1\nb 2\nc 3\n")
    assert events.recv(9) == b"00000001\n"
    eventually(lambda: find(registry_server).get("s") == {"a": "1", "b": "2", "c": "3"})
    sock.close()
    events.close()


def test_quoted_newline_in_one_send_is_one_value(registry_server):
    sock = register(registry_server, b"s a 'x\ny'\n")
    eventually(lambda: find(registry_server).get("s") == {"a": "x\ny"})
    sock.close()


def test_non_utf8_bytes_become_replacement_characters(registry_server):
    sock = register(registry_server, b"s v \xff\xfe\n")
    eventually(lambda: registered(registry_server, "s"))
    assert find(registry_server)["s"] == {"v": "\ufffd\ufffd"}
    sock.close()


def test_nul_in_value_is_refused_as_the_client_refuses_it(registry_server):
    # regmgr.limits: NUL does not survive Inferno's string handling.
    sock = register(registry_server, b"s v a\x00b\n")
    assert closed_by_server(sock)
    assert find_raw(registry_server) == b""


# -- §4 find ------------------------------------------------------------------

def test_filters_over_find_port(registry_server):
    socks = [register(registry_server, line) for line in
             (b"s1 proto http port 80\n", b"s2 proto HTTP\n", b"s3 port 81\n")]
    eventually(lambda: len(find(registry_server)) == 3)
    assert set(find(registry_server, "proto http")) == {"s1"}
    assert set(find(registry_server, "proto *")) == {"s1", "s2"}
    assert set(find(registry_server, "proto * port 80")) == {"s1"}
    assert set(find(registry_server, "nosuch *")) == set()
    assert find_raw(registry_server, b"nosuch x\n") == b""
    for sock in socks:
        sock.close()


def test_unnamed_services_never_listed(registry_server):
    sock = connect(registry_server.new_port)
    eventually(lambda: len(registry_server.registry._slots) == 1)  # opened, never named
    assert find_raw(registry_server) == b""
    sock.close()


def test_odd_filter_closes_without_reply(registry_server):
    sock = register(registry_server, b"s a 1\n")
    eventually(lambda: registered(registry_server, "s"))
    assert find_raw(registry_server, b"a\n") == b""
    sock.close()


def test_half_close_without_filter_lists_all(registry_server):
    sock = register(registry_server, b"s a 1\n")
    eventually(lambda: registered(registry_server, "s"))
    assert find_raw(registry_server, b"", half_close=True) == b"s a 1\n"
    sock.close()


def test_filter_without_newline_at_eof(registry_server):
    sock = register(registry_server, b"s a 1\n")
    eventually(lambda: registered(registry_server, "s"))
    assert find_raw(registry_server, b"a 1", half_close=True) == b"s a 1\n"
    sock.close()


def test_listing_order_after_removal(registry_server):
    socks = [register(registry_server, n + b"\n") for n in (b"a", b"b", b"c")]
    eventually(lambda: len(find(registry_server)) == 3)
    assert find_raw(registry_server) == b"a\nb\nc\n"
    socks[0].close()
    eventually(lambda: len(find(registry_server)) == 2)
    assert find_raw(registry_server) == b"c\nb\n"


# -- §5 and §6 event ----------------------------------------------------------

def read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, "event connection closed"
        data += chunk
    return data


def test_event_ready_then_versions(registry_server):
    events = connect(registry_server.event_port)
    assert read_line(events) == b"READY\n"
    sock = register(registry_server, b"s a 1\n")
    assert read_line(events) == b"00000001\n"
    sock.sendall(b"b 2\n")
    assert read_line(events) == b"00000002\n"
    sock.close()
    assert read_line(events) == b"00000003\n"
    events.close()


def test_event_coalesces_changes_while_client_is_busy():
    registry = Registry()
    gateway = TCPGateway(registry, new_port=0, find_port=0, event_port=0)
    gateway.start()
    try:
        events = connect(gateway.event_port)
        assert read_line(events) == b"READY\n"
        svc = registry.create("me")
        for i in range(50):
            registry.write(svc, "s a 0" if i == 0 else f"a {i}")  # no yield in between
        assert read_line(events) == b"00000050\n"
        events.settimeout(0.2)
        with pytest.raises(OSError):
            events.recv(1)
    finally:
        gateway.stop()


def test_event_ignores_client_bytes(registry_server):
    events = connect(registry_server.event_port)
    assert read_line(events) == b"READY\n"
    events.sendall(b"garbage \xff\x00\n" * 1000)
    sock = register(registry_server, b"s\n")
    assert read_line(events) == b"00000001\n"
    sock.close()
    events.close()


def test_event_closed_when_registry_dies(registry_process):
    events = connect(registry_process.event_port)
    assert read_line(events) == b"READY\n"
    registry_process.kill()
    assert closed_by_server(events)


def test_restart_on_same_ports_comes_back_empty(registry_process):
    sock = register(registry_process, b"s a 1\n")
    eventually(lambda: registered(registry_process, "s"))
    ports = (registry_process.new_port, registry_process.find_port, registry_process.event_port)
    registry_process.restart()
    assert (registry_process.new_port, registry_process.find_port, registry_process.event_port) == ports
    assert registry_process.index() == {}
    assert closed_by_server(sock)


def test_in_process_restart_keeps_ports():
    with RegistryServer() as server:
        ports = (server.new_port, server.find_port, server.event_port)
        sock = register(server, b"s\n")
        eventually(lambda: registered(server, "s"))
        server.restart()
        assert (server.new_port, server.find_port, server.event_port) == ports
        assert find(server) == {}
        assert closed_by_server(sock)


# -- limits and garbage ---------------------------------------------------------

def test_oversized_message_on_new_closes():
    registry = Registry()
    gateway = TCPGateway(registry, new_port=0, find_port=0, event_port=0, new_limit=1024)
    gateway.start()
    try:
        sock = connect(gateway.new_port)
        try:
            sock.sendall(b"s v " + b"x" * 5000)
        except OSError:
            pass
        assert closed_by_server(sock)
        assert registry.index() == ""
    finally:
        gateway.stop()


@pytest.mark.parametrize("line, accepted", [
    (b"s v " + b"x" * 4096 + b"\n", True),       # regmgr.limits: values up to 4 KiB
    (b"s v " + b"x" * 4097 + b"\n", False),
    (b"s " + b" ".join(b"a%d 1" % i for i in range(128)) + b"\n", True),  # 128 attributes
    (b"s " + b" ".join(b"a%d 1" % i for i in range(129)) + b"\n", False),
    (b"s " + b" ".join(b"a%d " % i + b"v" * 4000 for i in range(9)) + b"\n", False),  # line > 32 KiB
    (b"s" * 1025 + b"\n", False),                  # name over 1 KiB
    (b"t v " + b"x" * 70000 + b"\n", False),        # message over the gateway's 64 KiB
])
def test_default_limits_on_new(registry_server, line, accepted):
    sock = register(registry_server, line)
    name = line.split()[0].decode()
    if accepted:
        eventually(lambda: registered(registry_server, name))
        sock.close()
    else:
        assert closed_by_server(sock)
        assert not registered(registry_server, name)


def test_an_update_over_a_limit_closes_the_registration(registry_server):
    sock = register(registry_server, b"s " + b" ".join(b"a%d 1" % i for i in range(127)) + b"\n")
    eventually(lambda: registered(registry_server, "s"))
    sock.sendall(b"b 1 c 1\n")  # 129 attributes
    assert closed_by_server(sock)
    assert not registered(registry_server, "s")


def test_non_utf8_filter_is_read_as_replacement_characters(registry_server):
    # Limbo's string conversion turns each bad byte into U+FFFD, on both ports.
    sock = register(registry_server, b"s v \xff\xfe\n")
    eventually(lambda: registered(registry_server, "s"))
    assert find_raw(registry_server, b"v \xff\xfe\n") == "s v \ufffd\ufffd\n".encode()
    assert find_raw(registry_server, b"v \xff\n") == b""
    sock.close()


def test_find_filter_over_8k_closes_even_if_it_would_match(registry_server):
    # The real gateway reads one 8 KiB chunk as the filter; regmgr refuses more.
    attrs = {f"a{i}": "x" * 3000 for i in range(3)}
    line = "s " + " ".join(f"{k} {v}" for k, v in attrs.items()) + "\n"
    sock = register(registry_server, line.encode())
    eventually(lambda: registered(registry_server, "s"))
    assert find(registry_server, f"a0 {attrs['a0']} a1 {attrs['a1']}") == {"s": attrs}  # 6 KiB
    three = line[2:].encode()  # 9 KiB, every pair of the service
    assert len(three) > 8192
    assert find_raw(registry_server, three) == b""
    sock.close()


def test_silent_find_times_out_and_others_are_served():
    registry = Registry()
    gateway = TCPGateway(registry, new_port=0, find_port=0, event_port=0, find_timeout=0.3)
    gateway.start()
    try:
        idle = connect(gateway.find_port)
        assert find_raw(gateway, b"\n") == b""  # another client is not stalled
        assert closed_by_server(idle, timeout=3)
    finally:
        gateway.stop()


def test_slow_find_clients_do_not_delay_others():
    registry = Registry()
    for i in range(200):  # an 800 KiB listing
        registry.write(registry.create("me"), f"s{i} n {i} pad {'x' * 4000}")
    gateway = TCPGateway(registry, new_port=0, find_port=0, event_port=0, find_timeout=60)
    gateway.start()
    try:
        silent = connect(gateway.find_port)  # never sends its filter
        hoarder = gevent.socket.socket()
        hoarder.setsockopt(gevent.socket.SOL_SOCKET, gevent.socket.SO_RCVBUF, 4096)
        hoarder.connect(("127.0.0.1", gateway.find_port))
        hoarder.sendall(b"\n")  # and never reads the listing
        with gevent.Timeout(20, AssertionError("finds waited for the slow clients")):
            for i in range(0, 200, 20):
                assert set(find(gateway, f"n {i}")) == {f"s{i}"}
        silent.close()
        hoarder.close()
    finally:
        gateway.stop()


@pytest.mark.parametrize("port", ["new_port", "find_port", "event_port"])
def test_garbage_never_crashes_the_server(registry_server, port):
    import random
    rng = random.Random(port)
    for _ in range(20):
        sock = connect(getattr(registry_server, port))
        try:
            sock.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))))
        except OSError:
            pass
        sock.close()
    events = connect(registry_server.event_port)
    assert read_line(events) == b"READY\n"
    keeper = register(registry_server, b"alive a 1\n")
    eventually(lambda: find(registry_server, "a 1") == {"alive": {"a": "1"}})
    assert read_line(events) == b"%08d\n" % registry_server.registry.version
    keeper.close()
    events.close()
