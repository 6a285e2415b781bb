"""leave room in foo pages: every change of a foo is an UPDATE, and PostgreSQL can then write the
new version on the row's own page (a HOT update: no index entry, and one page in the WAL where
a full page costs a full-page image of a page far away). The write path pays it on every save

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A foo row is about 60 bytes: a fifth of each page holds some 25 new versions, where a foo
# changes a few times in its life and PostgreSQL prunes the dead ones on the page.
FOOS_FILLFACTOR = 80


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE foos SET (fillfactor = {FOOS_FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE foos RESET (fillfactor)")
