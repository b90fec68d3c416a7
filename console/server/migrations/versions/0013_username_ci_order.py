"""The folded usernames with the names and ids they sort by (SQLite).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

A search's second group, the usernames starting with its first word, is one range of ``username_ci``
when the word has too many case variants to walk each (5+ letters: ``karen``); its rows are then sorted
by username. With the index on ``username_ci`` alone SQLite read a users row for each (15,868 for
``karen`` at 1M users: ~50 ms); with the username and id in the index it reads the index alone (~11 ms).
PostgreSQL reads that range in ~30 ms already: nothing to do there.
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

INDEX = "ix_users_username_ci_order"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_index(INDEX, "users", ["username_ci", "username", "id"], if_not_exists=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index(INDEX, "users", if_exists=True)
