"""Indexed search: FTS5 trigram index on SQLite, prefix indexes on the folded names on both stores.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

- SQLite: ``users_search``, an FTS5 table (trigram tokenizer) over the five folded columns,
  filled from the users there are and kept in step by triggers (console/server/search_index.py).
  A search word of 3+ characters reads it instead of scanning every user.
- Both stores: btree indexes on firstname_ci, lastname_ci and displayname_ci, so a search word of
  1-2 characters in a several-word query (``Mary G``) is a range (prefix) read; username_ci and
  email_ci have their unique indexes already.
PostgreSQL's substring index is 0004's pg_trgm GIN index.
"""

from alembic import op

from console.server import search_index

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PREFIX_INDEXES = ("firstname_ci", "lastname_ci", "displayname_ci")


def upgrade() -> None:
    for column in PREFIX_INDEXES:
        # IF NOT EXISTS: a database made before migrations at this schema is upgraded from its inferred 0002.
        op.create_index(f"ix_users_{column}", "users", [column], if_not_exists=True)
    search_index.install(op.get_bind())


def downgrade() -> None:
    search_index.uninstall(op.get_bind())
    for column in PREFIX_INDEXES:
        op.drop_index(f"ix_users_{column}", "users", if_exists=True)
