"""Fixtures shared by every tier: databases (SQLite, PostgreSQL from a template) and RabbitMQ."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from infrastructure.sql.migrate import upgrade
from tests import services
from tests.e2e.postgres_cluster import Clusters


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database."""
    url = f"sqlite:///{tmp_path / 'postsave.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test copies (CREATE DATABASE ... TEMPLATE)."""
    services.check_postgres()
    name = services.create_database()
    upgrade(services.database_url(name))
    yield name
    services.drop_database(name)


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = services.create_database(template=pg_template)
    yield services.database_url(name)
    services.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test on the embedded database and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def container(database_url: str) -> Iterator[Container]:
    built = Container(Settings(database_url=database_url))
    yield built
    built.close()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ vhost of this test session's own."""
    services.check_rabbitmq()
    vhost = services.create_vhost()
    yield services.amqp_url_for(vhost)
    if vhost:
        services.delete_vhost(vhost)


# What the fault tests measured, carried on each test's report: under xdist the tests run in
# worker processes and only their reports reach the process that prints the summary.
FAULT_REPORT = "postsave fault report"
REPORTED: list[str] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    from tests.e2e.pipeline import FAULT_REPORTS

    report = yield
    report.user_properties.extend((FAULT_REPORT, line) for line in FAULT_REPORTS)
    FAULT_REPORTS.clear()
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    REPORTED.extend(str(value) for name, value in report.user_properties if name == FAULT_REPORT)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTED:
        terminalreporter.section("postsave fault tests: events lost, applied twice, broker bound")
        for line in REPORTED:
            terminalreporter.write_line(line)


@pytest.fixture
def clusters() -> Iterator[Clusters]:
    """PostgreSQL clusters of the test's own (a primary, standbys), dropped afterwards."""
    made = Clusters()
    try:
        yield made
    finally:
        made.drop_all()
