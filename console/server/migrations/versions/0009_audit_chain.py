"""A tamper-evident audit trail: each event's hash is chained to the previous one.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

``audit.prev_hash`` and ``audit.hash`` (sha256 over the event's canonical fields and ``prev_hash``,
console/server/services/audit.py ``event_hash``) and ``audit_chain``, one row with the last event's id
and hash. The events there are are hashed here, in id order.
"""

import sqlalchemy as sa
from alembic import op

from console.server.services.audit import GENESIS, event_hash

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def c_string(length: int) -> sa.types.TypeEngine[str]:
    """Audit text in code point order on PostgreSQL too, as the table's other columns (0003)."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


BATCH = 1000


def upgrade() -> None:
    conn = op.get_bind()
    if sa.inspect(conn).has_table("audit_chain"):
        return  # a database made before migrations at this schema (upgraded from its inferred 0002): chained already
    op.add_column("audit", sa.Column("prev_hash", c_string(64)))
    op.add_column("audit", sa.Column("hash", c_string(64)))
    serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    chain = op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_id", serial, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )
    audit = sa.table(
        "audit",
        sa.column("id"),
        sa.column("at", sa.DateTime()),
        sa.column("actor"),
        sa.column("actor_key_id"),
        sa.column("actor_role"),
        sa.column("action"),
        sa.column("target"),
        sa.column("details"),
        sa.column("kind"),
        sa.column("prev_hash"),
        sa.column("hash"),
    )
    last_id, prev = 0, GENESIS
    while True:
        rows = conn.execute(sa.select(audit).where(audit.c.id > last_id).order_by(audit.c.id).limit(BATCH)).all()
        if not rows:
            break
        updates = []
        for row in rows:
            digest = event_hash(dict(row._mapping), prev)
            updates.append({"row_id": row.id, "p": prev, "h": digest})
            last_id, prev = row.id, digest
        conn.execute(
            audit.update()
            .where(audit.c.id == sa.bindparam("row_id"))
            .values(prev_hash=sa.bindparam("p"), hash=sa.bindparam("h")),
            updates,
        )
    conn.execute(chain.insert().values(id=1, last_id=last_id, last_hash=prev))


def downgrade() -> None:
    op.drop_table("audit_chain")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
