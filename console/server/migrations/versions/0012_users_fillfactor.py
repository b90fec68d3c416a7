"""Room on the users table's pages for updated rows (PostgreSQL).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

A table loaded full (fillfactor 100, the default, and what COPY leaves) has no room on a page for a
row's new version: every UPDATE, even of an unindexed column such as ``totp_last_step`` on each
accepted TOTP code, then writes the new version on another page and inserts it into all of users'
indexes, the trigram GIN index among them. With ``fillfactor`` below 100 such updates stay on the
page ("HOT") and touch no index. The table is rewritten once (CLUSTER on its primary key, holding an
exclusive lock meanwhile: about a minute at 1,000,000 users) so that existing pages get the room too;
an empty table needs no rewrite. Nothing to do on SQLite.
"""

from alembic import op

from console.server.store import USERS_FILLFACTOR

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE users SET (fillfactor = {USERS_FILLFACTOR})")
    if bind.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM users)").scalar():
        # CLUSTER (unlike VACUUM FULL) may run in the migration's transaction; it leaves no mark behind.
        op.execute("CLUSTER users USING users_pkey")
        op.execute("ALTER TABLE users SET WITHOUT CLUSTER")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE users RESET (fillfactor)")  # pages written from now on are filled again
