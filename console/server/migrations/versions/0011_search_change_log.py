"""A log of the searchable names each version changed, so that kept search counts come forward cheaply.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

``users_search_changes``: per version, the folded names a change removed (sign -1) and added (+1),
written with the version by the same triggers, in the writer's transaction (they replace 0010's);
``users_search_version.floor``: the log holds every change after it (pruning and bulk loads move it).
A process's exact count at version v is brought to V by matching the logged rows of v+1..V with the
search's predicate instead of counting every match (console/server/search_index.py).
``users_search_counts``: large exact counts (query, epoch, version, total) stored by whichever process
made them, so that a process that has not counted a search yet (a new one, another worker) brings the
stored count forward the same way.
"""

from alembic import op

from console.server import search_index

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    search_index.install_log(op.get_bind())


def downgrade() -> None:
    search_index.uninstall_log(op.get_bind())
