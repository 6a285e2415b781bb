"""What each of postsave's runtime roles may do in its database, and the SQL that grants it.

Three group roles, none of which owns anything (the schema's owner runs the migrations):
- `postsave_app`: the domain service calls an application makes (foos and their events,
  creating bars). It writes events, and reads back only their ids.
- `postsave_worker`: the relay, the passes, retention, and the operator's writing commands
  (`dead retry`, `rebuild`, `prune`).
- `postsave_monitor`: `status`, `check`, `metrics`, `dead list`, `verify`: it reads.

`postsave grants` prints `grants_sql()`, for a DBA to apply with psql after each upgrade; it is
idempotent, and exact: it revokes what it does not grant. `postsave check` reports what
`missing_grants` finds, in a database where the roles hold any privilege."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, Table, text

from infrastructure.sql.migrate import VERSION_TABLE
from infrastructure.sql.schema import (
    bar_baselines,
    bar_parts,
    bar_projection,
    bars,
    foos,
    metadata,
    outbox_counters,
    outbox_events,
    projection_checkpoint,
)

APP, WORKER, MONITOR = "postsave_app", "postsave_worker", "postsave_monitor"
ROLES = (APP, WORKER, MONITOR)


@dataclass(frozen=True)
class Grant:
    """Privileges of a role on a table; `columns` narrows them to those columns."""

    role: str
    table: str
    privileges: tuple[str, ...]
    columns: tuple[str, ...] = ()

    def sql(self) -> str:
        columns = f" ({', '.join(self.columns)})" if self.columns else ""
        listed = ", ".join(f"{privilege}{columns}" for privilege in self.privileges)
        return f"GRANT {listed} ON TABLE {self.table} TO {self.role};"


def _grants(role: str, tables: Mapping[Table | str, str]) -> list[Grant]:
    found = []
    for table, privileges in tables.items():
        name = table if isinstance(table, str) else table.name
        found.append(Grant(role, name, tuple(privileges.split(", "))))
    return found


# Each privilege is there for a statement of postsave's; SELECT ... FOR UPDATE needs UPDATE.
GRANTS: tuple[Grant, ...] = (
    *_grants(
        APP,
        {
            foos: "SELECT, INSERT, UPDATE",
            # Creating a bar: it joins the last part (locked, its count raised) or opens one
            # at the head, starts from the part's position and total, and keeps a baseline.
            bars: "INSERT",
            bar_parts: "SELECT, INSERT, UPDATE",
            bar_baselines: "INSERT",
            bar_projection: "SELECT",
        },
    ),
    Grant(APP, outbox_events.name, ("INSERT",)),
    Grant(APP, outbox_events.name, ("SELECT",), ("id",)),  # INSERT ... RETURNING id
    Grant(APP, bars.name, ("SELECT",), ("id",)),
    # The first bar records the recalculation the bars are computed with.
    Grant(APP, bar_projection.name, ("UPDATE",), ("recalculation",)),
    *_grants(
        WORKER,
        {
            foos: "SELECT",
            outbox_events: "SELECT, UPDATE, DELETE",
            bars: "SELECT, UPDATE",
            bar_parts: "SELECT, UPDATE",
            bar_baselines: "SELECT, INSERT, UPDATE",
            bar_projection: "SELECT, UPDATE",
            outbox_counters: "SELECT, UPDATE",
            projection_checkpoint: "SELECT, UPDATE",
        },
    ),
    # Counts, ages, parts and dead letters, and the revision; never a foo or a bar.
    *_grants(
        MONITOR,
        {
            table: "SELECT"
            for table in (
                outbox_events,
                outbox_counters,
                bar_parts,
                bar_projection,
                projection_checkpoint,
                VERSION_TABLE,
            )
        },
    ),
)

# Sequences of the tables a role inserts into: INSERT takes the next id from them.
SEQUENCES = {table.name: f"{table.name}_id_seq" for table in (foos, bars, bar_parts, outbox_events)}


def sequence_grants() -> list[tuple[str, str]]:
    """(role, sequence) for each table a role inserts into."""
    pairs = {
        (grant.role, SEQUENCES[grant.table])
        for grant in GRANTS
        if "INSERT" in grant.privileges and grant.table in SEQUENCES
    }
    return sorted(pairs)


def _tables() -> list[str]:
    return sorted({*metadata.tables, VERSION_TABLE})


def _columns(table: str) -> list[str]:
    if table == VERSION_TABLE:
        return ["version_num"]
    return [column.name for column in metadata.tables[table].columns]


def grants_sql(revision: str, schema: str = "public") -> str:
    """Idempotent SQL: the group roles if missing, then exactly GRANTS (what is not granted
    here is revoked, column privileges included), in one transaction."""
    roles = ", ".join(ROLES)
    lines = [
        f"-- postsave's runtime roles, for the schema at revision {revision}.",
        "-- Apply with: postsave grants | psql -v ON_ERROR_STOP=1 -d <database>",
        "-- as the schema's owner or a superuser (creating the roles needs CREATEROLE), after",
        "-- every `postsave migrate`. Login roles join a group: GRANT postsave_app TO <login>;",
        "BEGIN;",
        f"SET LOCAL search_path TO {schema};",
    ]
    for role in ROLES:
        lines += [
            "DO $$ BEGIN",
            f"  CREATE ROLE {role} NOLOGIN;",
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;",
            "END $$;",
        ]
    lines += [
        f"GRANT USAGE ON SCHEMA {schema} TO {roles};",
        f"REVOKE CREATE ON SCHEMA {schema} FROM {roles};",
    ]
    for table in _tables():
        lines.append(f"REVOKE ALL ON TABLE {table} FROM {roles};")
        lines.append(f"REVOKE ALL ({', '.join(_columns(table))}) ON TABLE {table} FROM {roles};")
    lines += [f"REVOKE ALL ON SEQUENCE {sequence} FROM {roles};" for sequence in SEQUENCES.values()]
    lines += [grant.sql() for grant in GRANTS]
    lines += [f"GRANT USAGE ON SEQUENCE {seq} TO {role};" for role, seq in sequence_grants()]
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


def roles_in_use(connection: Connection) -> bool:
    """Whether a group role holds a privilege on a table of this database's schema: a
    deployment that connects as one role has none, and nothing is checked."""
    query = text(
        "SELECT EXISTS (SELECT FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a"
        " JOIN pg_roles r ON r.oid = a.grantee"
        " WHERE c.relnamespace = to_regnamespace(current_schema()) AND r.rolname = ANY(:roles))"
    )
    return bool(connection.execute(query, {"roles": list(ROLES)}).scalar())


_HAS_TABLE = text(
    "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :role) AND to_regclass(:table) IS NOT"
    " NULL AND has_table_privilege(:role, :table, :privilege)"
)
_HAS_COLUMN = text(
    "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :role) AND to_regclass(:table) IS NOT"
    " NULL AND has_column_privilege(:role, :table, :column, :privilege)"
)
_HAS_SEQUENCE = text(
    "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :role) AND to_regclass(:table) IS NOT"
    " NULL AND has_sequence_privilege(:role, :table, 'USAGE')"
)


def missing_grants(connection: Connection) -> list[str]:
    """Each privilege of GRANTS (and of the sequences) a group role lacks here, as
    `role: PRIVILEGE on table`; empty when the grants are as this version needs them."""
    missing = []
    for grant in GRANTS:
        for privilege in grant.privileges:
            for column in grant.columns or (None,):
                asked = {"role": grant.role, "table": grant.table, "privilege": privilege}
                if column is None:
                    held = connection.execute(_HAS_TABLE, asked).scalar()
                else:
                    held = connection.execute(_HAS_COLUMN, {**asked, "column": column}).scalar()
                if not held:
                    what = f"{privilege} ({column})" if column else privilege
                    missing.append(f"{grant.role}: {what} on {grant.table}")
    for role, sequence in sequence_grants():
        if not connection.execute(_HAS_SEQUENCE, {"role": role, "table": sequence}).scalar():
            missing.append(f"{role}: USAGE on {sequence}")
    return missing
