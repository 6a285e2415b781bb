"""`postsave grants`: the SQL a DBA applies with psql. It needs no database to print it
(tests/integration/test_roles.py applies it and runs every component under the roles)."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory

from infrastructure.sql.grants import APP, GRANTS, MONITOR, WORKER
from infrastructure.sql.migrate import alembic_config
from tests.cli.conftest import run_in_process
from tests.cli.test_cli import assert_one_line_error

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
UNUSED = "postgresql+psycopg://nobody@127.0.0.1:9/none"  # never connected to


def test_grants_prints_one_transaction_for_the_latest_revision(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_in_process(monkeypatch, capsys, UNUSED, ["grants"])

    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[0] == f"-- postsave's runtime roles, for the schema at revision {HEAD}."
    statements = [line for line in lines if not line.startswith("--")]
    assert statements[:2] == ["BEGIN;", "SET LOCAL search_path TO public;"]
    assert statements[-1] == "COMMIT;"
    for role in (APP, WORKER, MONITOR):
        assert f"  CREATE ROLE {role} NOLOGIN;" in lines
    assert "GRANT INSERT ON TABLE outbox_events TO postsave_app;" in lines
    assert "GRANT SELECT (id) ON TABLE outbox_events TO postsave_app;" in lines
    assert len([line for line in lines if line.startswith("GRANT ") and " ON TABLE " in line]) == (
        len(GRANTS)
    )
    # Nothing that changes the schema, and no role gets a login or a password here.
    assert not any(word in result.out for word in ("ALTER TABLE", "DROP ", "PASSWORD", " LOGIN"))


def test_grants_for_another_schema_and_a_name_that_is_not_plain(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    other = run_in_process(monkeypatch, capsys, UNUSED, ["grants", "--schema", "billing"])
    assert "SET LOCAL search_path TO billing;" in other.out
    assert "GRANT USAGE ON SCHEMA billing TO " in other.out

    refused = run_in_process(monkeypatch, capsys, UNUSED, ["grants", "--schema", "x; DROP"])

    assert_one_line_error(refused, code=2)
    assert "'x; DROP' is not a plain SQL name" in refused.err
