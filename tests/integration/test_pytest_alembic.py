"""pytest-alembic's built-in tests on a real PostgreSQL database, through its own fixtures:
`alembic_config` and `alembic_engine` are overridden here, as its users override them, and
its `alembic_runner` hands env.py the engine in `config.attributes["connection"]`.

pytest-alembic's collector (`--test-alembic`, binding the tests to tests/conftest.py) fails on
pytest 9.2 and is off in pyproject.toml; importing the built-in tests is its other documented
way to run them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Engine, create_engine

from tests import services

pytestmark = pytest.mark.postgres

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]


@pytest.fixture
def alembic_config() -> Config:
    """The checkout's alembic.ini, as `alembic upgrade head` reads it; its logging setup is
    left out, since it would reconfigure this test process's."""
    config = Config(str(ALEMBIC_INI))
    config.attributes["configure_logging"] = False
    return config


@pytest.fixture
def alembic_engine() -> Iterator[Engine]:
    """An empty PostgreSQL database of the test's own."""
    services.check_postgres()
    name = services.create_database()
    engine = create_engine(services.database_url(name))
    try:
        yield engine
    finally:
        engine.dispose()
        services.drop_database(name)
