"""A ZooKeeper ensemble for the tests: one per session, three servers on loopback.

Tests that kill a server start it again before they end (``restored``), so
every test finds all three serving. Each test works under its own root node.
"""
import contextlib
import itertools
import os

import pytest

from regmgr.testing import RegistryServer
from regmgr.testing_zk import Ensemble, zookeeper_available

_roots = itertools.count()


@pytest.fixture(scope="session")
def zk_ensemble():
    """Three ZooKeeper servers; skipped without Debian's zookeeper, except in CI."""
    if not zookeeper_available():
        if os.environ.get("CI"):
            pytest.fail("ZooKeeper is not installed (.ci/run installs Debian's zookeeper)")
        pytest.skip("Debian's zookeeper package is not installed")
    pytest.importorskip("kazoo")
    with Ensemble() as ensemble:
        yield ensemble


@pytest.fixture
def zk_root():
    """A root node of the ensemble no other test uses."""
    return f"/regmgr-test-{os.getpid()}-{next(_roots)}"


@contextlib.contextmanager
def restored(ensemble):
    """Start again, at the end, every server the block killed."""
    try:
        yield ensemble
    finally:
        for i in range(ensemble.size):
            if not ensemble.running(i):
                ensemble.start_server(i)
        ensemble.wait_serving(list(range(ensemble.size)))


@pytest.fixture(params=["memory", "zookeeper"])
def registry_server(request):
    """The in-process registry over each store, so that every test using it runs
    against the memory store and against a ZooKeeper-backed frontend."""
    if request.param == "memory":
        with RegistryServer() as server:
            yield server
        return
    ensemble = request.getfixturevalue("zk_ensemble")
    root = request.getfixturevalue("zk_root")
    # A long session: a busy machine must not expire it (no test here kills a frontend).
    with RegistryServer(store=ensemble.url(root), session_timeout=10.0) as server:
        yield server
