"""Registration.notify: the end of a registration, told without a greenlet per registration."""
import gevent
from gevent.event import AsyncResult

from regmgr import RegistryError
from serverutil import eventually


def ended(registration):
    result = AsyncResult()
    registration.notify(result.set)
    return result


def test_close_notifies_none(connection_factory, registry_server):
    registration = connection_factory(registry_server).open_new("svc")
    outcome = ended(registration)
    gevent.sleep(0.05)
    assert not outcome.ready()  # nothing ends a standing registration
    registration.close()
    assert outcome.get(timeout=5) is None
    eventually(lambda: registry_server.index() == {})


def test_a_registry_that_goes_away_notifies_a_connection_error(connection_factory,
                                                              registry_server):
    registration = connection_factory(registry_server).open_new("svc")
    outcome = ended(registration)
    registry_server.stop()
    assert isinstance(outcome.get(timeout=10), ConnectionError)
    registration.close()  # after the end: nothing more is told


def test_a_removed_service_is_told_over_styx(registry_server):
    from regmgr import Styx
    connection = Styx(registry_server.host, registry_server.styx_port, user="alice")
    registration = connection.open_new("svc")
    outcome = ended(registration)
    connection.remove("svc")
    registration.update({"a": "1"})  # the registry refuses the write: the entry is gone
    assert isinstance(outcome.get(timeout=5), RegistryError)
    registration.close()
