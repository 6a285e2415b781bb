"""A database as a least-privilege deployment has it: owned by a login role that is neither a
superuser nor anything else (it runs the migrations), the grants of `postsave grants` applied
with psql by the server's superuser (the DBA), and a login role in each group. Roles belong to
the whole server: the group roles are shared by every test (the grants are per database), the
login roles and the owner are the test's own and dropped after it."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import make_url

from infrastructure.sql.grants import APP, MONITOR, WORKER, grants_sql
from infrastructure.sql.migrate import upgrade
from tests import services


@dataclass(frozen=True)
class RoleUrls:
    database: str
    owner: str
    app: str
    worker: str
    monitor: str
    superuser: str

    def libpq(self, url: str) -> str:
        """The URL as psql takes it."""
        return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def login_url(role: str, database: str) -> str:
    return (
        make_url(services.PG_SERVER_URL)
        .set(username=role, password=None, database=database)
        .render_as_string(hide_password=False)
    )


def admin(*statements: str) -> None:
    with services.admin_connection() as connection:
        for statement in statements:
            connection.execute(text(statement))  # type: ignore[attr-defined]


def psql(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url],
        input=sql,
        capture_output=True,
        text=True,
        timeout=60,
    )


def apply_grants(urls: RoleUrls, revision: str = "head") -> None:
    done = psql(urls.libpq(urls.superuser), grants_sql(revision))
    assert done.returncode == 0, done.stderr


@contextmanager
def role_database(migrate: bool = True, grant: bool = True) -> Iterator[RoleUrls]:
    services.check_postgres()
    tag = f"pst_{uuid.uuid4().hex[:10]}"
    owner, database = f"{tag}_owner", f"{tag}_db"
    logins = {APP: f"{tag}_app", WORKER: f"{tag}_worker", MONITOR: f"{tag}_monitor"}
    admin(f"CREATE ROLE {owner} LOGIN", f"CREATE DATABASE {database} OWNER {owner}")
    try:
        urls = RoleUrls(
            database=database,
            owner=login_url(owner, database),
            app=login_url(logins[APP], database),
            worker=login_url(logins[WORKER], database),
            monitor=login_url(logins[MONITOR], database),
            superuser=services.database_url(database),
        )
        if migrate:
            upgrade(urls.owner)
        if grant:
            apply_grants(urls)
            for group, login in logins.items():
                admin(f"CREATE ROLE {login} LOGIN IN ROLE {group}")
        yield urls
    finally:
        services.drop_database(database)
        admin(*(f"DROP ROLE IF EXISTS {role}" for role in (*logins.values(), owner)))
