"""`postsave check` reads postsave's revision from `postsave_alembic_version`: an application's
revision in `alembic_version` is not postsave's, and a revision an older postsave left there
is named, with what moves it."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory

from infrastructure.sql.migrate import alembic_config
from tests.cli.conftest import Result, run_in_process
from tests.integration.databases import execute, migrated_as_before_its_own_table

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def database_line(result: Result) -> str:
    [line] = [line for line in (result.out + result.err).splitlines() if "database:" in line]
    return line


def test_check_names_a_revision_left_in_alembic_version_and_migrate_moves_it(
    unmigrated_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    migrated_as_before_its_own_table(unmigrated_url, str(HEAD))

    before = run_in_process(monkeypatch, capsys, unmigrated_url, ["check"])
    migrated = run_in_process(monkeypatch, capsys, unmigrated_url, ["migrate"])
    after = run_in_process(monkeypatch, capsys, unmigrated_url, ["check"])

    assert before.code == 1
    assert database_line(before) == (
        f"database: at revision {HEAD} in alembic_version, not yet in postsave_alembic_version; "
        "run `postsave migrate`"
    )
    assert migrated.code == 0, migrated
    assert database_line(after).endswith(f"at the latest revision ({HEAD})")


def test_check_finds_postsave_at_head_beside_an_applications_alembic_version(
    unmigrated_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_in_process(monkeypatch, capsys, unmigrated_url, ["migrate"]).code == 0
    execute(
        unmigrated_url,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
        "INSERT INTO alembic_version (version_num) VALUES ('0001')",  # the application's own
    )

    result = run_in_process(monkeypatch, capsys, unmigrated_url, ["check"])

    assert database_line(result).startswith("database: ok, ")
    assert database_line(result).endswith(f"at the latest revision ({HEAD})")
