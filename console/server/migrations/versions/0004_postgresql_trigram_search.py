"""PostgreSQL: a trigram index (pg_trgm) for the users search (``LIKE '%term%'`` on the folded columns).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Substring search cannot use a btree; with pg_trgm's GIN index a search of three or more
characters reads only the matching rows instead of the whole directory. pg_trgm is a
trusted extension (PostgreSQL 13+): a database owner may create it. Where it cannot be
created the search still works, without the index. SQLite: nothing to do.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("username_ci", "email_ci", "firstname_ci", "lastname_ci", "displayname_ci")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError:  # not installed on the server, or not allowed: search without the index
        return
    ops = ", ".join(f"{column} gin_trgm_ops" for column in COLUMNS)
    bind.execute(sa.text(f"CREATE INDEX IF NOT EXISTS ix_users_search_trgm ON users USING gin ({ops})"))


def downgrade() -> None:
    raise NotImplementedError("the store is only upgraded; restore a backup to go back")
