"""A version of the searchable names, so that exact search counts can be reused until they change.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

``users_search_version``: one row (a random ``epoch``, a ``version``) that triggers move on in the
writer's transaction whenever a user is added, removed or has a searchable (``*_ci``) column set:
row triggers on SQLite, one statement trigger on PostgreSQL. A process keeps the exact counts of
searches by (epoch, version, query) and answers a repeat from there (console/server/search_index.py).
"""

from alembic import op

from console.server import search_index

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    search_index.install_version(op.get_bind())


def downgrade() -> None:
    search_index.uninstall_version(op.get_bind())
