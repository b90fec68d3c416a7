"""PostgreSQL: names, emails and audit fields order by code point ("C" collation), as on SQLite.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

A server's default collation (en_US.UTF-8 and the like) orders "van der Berg" after
"Vanberg" and ignores punctuation; SQLite orders by code point. With COLLATE "C" the same
query gives the same order on both stores, whatever locale the server was made with, and
the btree indexes also serve LIKE 'prefix%' (search and the audit's action filter).
SQLite: nothing to do.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TEXT = {
    "users": (
        "username",
        "email",
        "firstname",
        "lastname",
        "displayname",
        "username_ci",
        "email_ci",
        "firstname_ci",
        "lastname_ci",
        "displayname_ci",
        "firstname_sort",
        "lastname_sort",
    ),
    "audit": ("actor", "target"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in TEXT.items():
        for column in columns:
            op.alter_column(
                table, column, type_=sa.Text(collation="C"), existing_type=sa.Text(), existing_nullable=False
            )
    op.alter_column(
        "audit", "action", type_=sa.String(64, collation="C"), existing_type=sa.String(64), existing_nullable=False
    )


def downgrade() -> None:
    raise NotImplementedError("the store is only upgraded; restore a backup to go back")
