"""Stop attack, name sort keys, audit kinds; push attempt history outlives a deleted user.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

- users: firstname_sort/lastname_sort (accent- and case-folded, backfilled here), the push
  block (push_blocked_until/_by/_at) and require_user_verification, with their indexes;
- push_attempts: no foreign key to users any more (no cascade: history is kept), and
  ``username``, which keeps a deleted user's name;
- audit: ``kind`` (admin/device) and ``target_name``, and indexes for the audit filters.
"""

import sqlalchemy as sa
from alembic import op

from console.server.store import sort_key

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# SQLite reflects foreign keys without names: name them so the batch copy can drop one.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    bind = op.get_bind()

    op.add_column("users", sa.Column("firstname_sort", sa.Text, nullable=False, server_default=""))
    op.add_column("users", sa.Column("lastname_sort", sa.Text, nullable=False, server_default=""))
    op.add_column("users", sa.Column("push_blocked_until", sa.DateTime))
    op.add_column("users", sa.Column("push_blocked_by", sa.Text))
    op.add_column("users", sa.Column("push_blocked_at", sa.DateTime))
    op.add_column(
        "users", sa.Column("require_user_verification", sa.Boolean, nullable=False, server_default=sa.false())
    )
    users = sa.table(
        "users",
        sa.column("id"),
        sa.column("firstname"),
        sa.column("lastname"),
        sa.column("firstname_sort"),
        sa.column("lastname_sort"),
    )
    rows = bind.execute(sa.select(users.c.id, users.c.firstname, users.c.lastname)).all()
    if rows:
        bind.execute(
            users.update()
            .where(users.c.id == sa.bindparam("uid"))
            .values(firstname_sort=sa.bindparam("fs"), lastname_sort=sa.bindparam("ls")),
            [{"uid": r.id, "fs": sort_key(r.firstname), "ls": sort_key(r.lastname)} for r in rows],
        )
    op.create_index("ix_users_lastname_sort", "users", ["lastname_sort", "firstname_sort", "id"])
    op.create_index("ix_users_firstname_sort", "users", ["firstname_sort", "lastname_sort", "id"])
    op.create_index("ix_users_push_blocked", "users", ["push_blocked_until"])

    username = sa.Column("username", sa.Text)
    if bind.dialect.name == "sqlite":  # no ALTER ... DROP CONSTRAINT: Alembic copies the table
        with op.batch_alter_table("push_attempts", recreate="always", naming_convention=NAMING) as batch:
            batch.drop_constraint("fk_push_attempts_user_id_users", type_="foreignkey")
            batch.add_column(username)
    else:
        for fk in sa.inspect(bind).get_foreign_keys("push_attempts"):
            if fk["referred_table"] == "users":
                assert fk["name"] is not None, "PostgreSQL names every constraint"
                op.drop_constraint(fk["name"], "push_attempts", type_="foreignkey")
        op.add_column("push_attempts", username)

    op.add_column("audit", sa.Column("kind", sa.String(8), nullable=False, server_default="admin"))
    op.add_column("audit", sa.Column("target_name", sa.Text))
    op.create_index("ix_audit_target_id", "audit", ["target", "id"])
    op.create_index("ix_audit_actor_id", "audit", ["actor", "id"])
    op.create_index("ix_audit_action_id", "audit", ["action", "id"])
    op.create_index("ix_audit_kind_id", "audit", ["kind", "id"])


def downgrade() -> None:
    raise NotImplementedError("the store is only upgraded; restore a backup to go back")
