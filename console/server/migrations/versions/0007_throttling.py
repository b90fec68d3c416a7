"""Rate limits and temporary lock-outs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

- ``users.totp_failure_at`` (the last wrong code: the failure window slides with it), ``totp_locked_until``
  (the lock-out in force) and ``totp_lockouts`` (lock-outs in a row, for the growing back-off).
- ``rate_limit_hits``: per (route, subject, minute) counters shared by every process (services/ratelimit.py).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only what is missing: a database made before migrations is upgraded from its inferred 0002 (store.py).
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns("users")}
    for column in (
        sa.Column("totp_failure_at", sa.DateTime()),
        sa.Column("totp_locked_until", sa.DateTime()),
        sa.Column("totp_lockouts", sa.Integer(), nullable=False, server_default="0"),
    ):
        if column.name not in have:
            op.add_column("users", column)
    if not inspector.has_table("rate_limit_hits"):
        op.create_table(
            "rate_limit_hits",
            sa.Column("route", sa.String(16), nullable=False),
            sa.Column("subject", sa.String(80), nullable=False),
            sa.Column("window_start", sa.BigInteger(), nullable=False, autoincrement=False),
            sa.Column("hits", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("route", "subject", "window_start"),
        )
    op.create_index("ix_rate_limit_hits_window", "rate_limit_hits", ["window_start"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_rate_limit_hits_window", "rate_limit_hits")
    op.drop_table("rate_limit_hits")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("totp_lockouts")
        batch.drop_column("totp_locked_until")
        batch.drop_column("totp_failure_at")
