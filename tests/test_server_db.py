"""The static attrdb database of ``ndb/registry -f`` (registry4.md §8)."""
import pytest

from regmgr.server.db import DatabaseError, load_db, parse_db
from regmgr.server.state import Registry
from regmgr.testing import RegistryServer

from serverutil import find, register, closed_by_server

DB = """\
# snapshot services
service=net!click!1234
    description='snapshot service' auth=none
service=tcp!x!1 flag
\tquote='it''s'  # a comment
host=notaservice ip=1.2.3.4
service=new
"""


def test_parse_db():
    entries = parse_db(DB)
    assert entries[0] == [("service", "net!click!1234"), ("description", "snapshot service"),
                          ("auth", "none")]
    assert entries[1] == [("service", "tcp!x!1"), ("flag", ""), ("quote", "it's")]
    assert len(entries) == 4


@pytest.mark.parametrize("text, line", [
    ("  a=b\n", 1),
    ("service=x\n  d='open\n", 2),
    ("service=x\n\n=v\n", 3),
])
def test_malformed_db_names_the_line(tmp_path, text, line):
    path = tmp_path / "reg.db"
    path.write_text(text)
    with pytest.raises(DatabaseError, match=f"reg.db:{line}:"):
        load_db(Registry(), path)


def test_missing_db_is_a_clear_error(tmp_path):
    with pytest.raises(DatabaseError, match="can't open"):
        load_db(Registry(), tmp_path / "nope")


def test_db_services_are_persistent_and_owned_by_registry(tmp_path):
    path = tmp_path / "reg.db"
    path.write_text(DB)
    with RegistryServer(dbfile=path) as server:
        services = find(server)
        assert services == {
            "net!click!1234": {"description": "snapshot service", "auth": "none"},
            "tcp!x!1": {"flag": "", "quote": "it's"},
        }
        assert server.registry.get("tcp!x!1").owner == "registry"
        assert closed_by_server(register(server, b"tcp!x!1\n"))  # duplicate of a static one
        server.restart()
        assert set(find(server)) == set(services)
        # Inferno sets the pairs in order, each new one in front.
        assert [a for a, _ in server.registry.get("net!click!1234").attrs] == ["auth", "description"]
