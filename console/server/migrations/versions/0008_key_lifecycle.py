"""API key lifecycle (expiry, resource scope, last use) and the audit actor's key id and role.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

- ``api_keys.expires_at`` (null: never), ``last_used_at`` (at most once a minute per key and process),
  ``resources`` (a JSON list a service key may push for; null: any).
- ``audit.actor_key_id`` and ``audit.actor_role``: which key did it, beside the free-text ``actor`` name
  (null on older events, device events and changes made with the local CLI).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def c_string(length: int) -> sa.types.TypeEngine[str]:
    """Audit text in code point order on PostgreSQL too, as the table's other columns (0003)."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


NEW_COLUMNS = {
    "api_keys": (
        sa.Column("expires_at", sa.DateTime()),
        sa.Column("last_used_at", sa.DateTime()),
        sa.Column("resources", sa.Text()),
    ),
    "audit": (sa.Column("actor_key_id", c_string(24)), sa.Column("actor_role", c_string(16))),
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in NEW_COLUMNS.items():
        # Only those missing: a database made before migrations at this schema is upgraded from its inferred 0002.
        present = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.name not in present:
                op.add_column(table, column)


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("actor_role")
        batch.drop_column("actor_key_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("resources")
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
