"""Session fixtures for tests against real hosts (see tests/harness/).

* ``base_image``: the cached Debian image (built on first use, minutes);
* ``host_factory``: ``make_hosts(n) -> list[TestHost]``, hosts live until the
  session ends; ``scoped_host_factory``: same, destroyed after each test;
* ``postgres_db``: a per-run role + database on 127.0.0.1:5432.

If the harness cannot work here (not root, no systemd-nspawn, ...), host tests
skip with the reason, except under CI (``CI=true``) where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import postgres
from tests.harness.common import unavailable_reason
from tests.harness.hosts import HostPool, TestHost, install_signal_cleanup
from tests.harness.image import BaseImage, build_base_image
from tests.harness.pytest_support import (
    MakeHosts,
    harness_unavailable,
    postgres_unavailable_reason,
)

HOST_FIXTURES = {"base_image", "host_pool", "host_factory", "scoped_host_factory"}


def pytest_configure(config: pytest.Config) -> None:
    if not any(m.startswith("hosts:") for m in config.getini("markers")):
        config.addinivalue_line(
            "markers", "hosts: boots real systemd-nspawn test hosts (root, systemd-container)")
    install_signal_cleanup()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a host fixture with ``hosts`` (for ``-m``)."""
    for item in items:
        if HOST_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.hosts)


@pytest.fixture(scope="session")
def base_image() -> BaseImage:
    reason = unavailable_reason()
    if reason:
        harness_unavailable(reason)
    return build_base_image()


@pytest.fixture(scope="session")
def host_pool(base_image: BaseImage) -> Iterator[HostPool]:
    pool = HostPool(base_image)
    try:
        yield pool
    finally:
        pool.destroy_all()


@pytest.fixture(scope="session")
def host_factory(host_pool: HostPool) -> MakeHosts:
    return host_pool.make_hosts


@pytest.fixture
def scoped_host_factory(host_pool: HostPool) -> Iterator[MakeHosts]:
    created: list[TestHost] = []

    def make_hosts(n: int) -> list[TestHost]:
        hosts = host_pool.make_hosts(n)
        created.extend(hosts)
        return hosts

    yield make_hosts
    host_pool.destroy(created)


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[postgres.PostgresDB]:
    reason = postgres_unavailable_reason()
    if reason:
        harness_unavailable(reason)
    db = postgres.create_test_database()
    # Before any host connects: preloading it restarts the cluster (once per machine), which
    # must not happen under running apps (`db slow-queries` reads it).
    db.enable_pg_stat_statements()
    try:
        yield db
    finally:
        db.drop()
