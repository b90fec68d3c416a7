"""The first schema: the store as it was before migrations (users, devices, push attempts, audit...).

Revision ID: 0001
Revises:
Create Date: 2026-12-02

A database made before migrations (our tables, no alembic_version) is recognised as this
revision by console.server.store.schema_state and stamped by `protect-console db upgrade`.
Frozen: never edit a migration that has shipped; add a new one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(24)
SERIAL_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", ID, primary_key=True),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("firstname", sa.Text, nullable=False),
        sa.Column("lastname", sa.Text, nullable=False),
        sa.Column("displayname", sa.Text, nullable=False),
        sa.Column("username_ci", sa.Text, nullable=False),
        sa.Column("email_ci", sa.Text, nullable=False),
        sa.Column("firstname_ci", sa.Text, nullable=False),
        sa.Column("lastname_ci", sa.Text, nullable=False),
        sa.Column("displayname_ci", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("account_locked", sa.Boolean, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("totp_secret", sa.String(64)),
        sa.Column("totp_status", sa.String(24), nullable=False),
        sa.Column("totp_last_step", sa.BigInteger),
        sa.Column("totp_failures", sa.Integer, nullable=False),
        sa.Column("push_status", sa.String(24), nullable=False),
        sa.Column("push_pending_until", sa.DateTime),
        sa.Column("webauthn_status", sa.String(24), nullable=False),
        sa.Column("mfa_exclusion", sa.Boolean, nullable=False),
        sa.Column("mfa_exclusion_until", sa.DateTime),
    )
    op.create_index("ux_users_username_ci", "users", ["username_ci"], unique=True)
    op.create_index("ux_users_email_ci", "users", ["email_ci"], unique=True)
    op.create_index("ix_users_username_id", "users", ["username", "id"])
    op.create_index("ix_users_created_id", "users", ["created", "id"])
    op.create_index("ix_users_push_status", "users", ["push_status"])
    op.create_index("ix_users_totp_status", "users", ["totp_status"])

    op.create_table(
        "devices",
        sa.Column("id", ID, primary_key=True),
        sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("make", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("os", sa.String(16), nullable=False),
        sa.Column("os_version", sa.String(32), nullable=False),
        sa.Column("app_version", sa.String(32), nullable=False),
        sa.Column("uv_enabled", sa.Boolean, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("enrolled_at", sa.DateTime, nullable=False),
        sa.Column("last_used_at", sa.DateTime),
        sa.Column("diagnostics_opt_out", sa.Boolean, nullable=False),
        sa.Column("privacy_updated_at", sa.DateTime),
        sa.Column("notifications_enabled", sa.Boolean, nullable=False),
        sa.Column("diagnostics_dropped", sa.Integer, nullable=False),
    )
    op.create_index("ix_devices_opt_out", "devices", ["diagnostics_opt_out", "id"])

    op.create_table(
        "diagnostics",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("device_id", ID, nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
    )

    op.create_table(
        "enrollment_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("used_at", sa.DateTime),
    )
    op.create_index("ix_enrollment_codes_user", "enrollment_codes", ["user_id"])

    op.create_table(
        "push_attempts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("device_id", ID),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fraud", sa.Boolean, nullable=False),
        sa.Column("user_verified", sa.Boolean),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("responded_at", sa.DateTime),
        sa.Column("app", sa.Text),
        sa.Column("location", sa.Text),
        sa.Column("ip", sa.String(64)),
    )
    op.create_index("ix_push_cap", "push_attempts", ["user_id", "resource", "status", "expires_at"])
    op.create_index("ix_push_user_created", "push_attempts", ["user_id", "created_at"])
    op.create_index("ix_push_created", "push_attempts", ["created_at"])
    op.create_index("ix_push_status_created", "push_attempts", ["status", "created_at"])

    op.create_table(
        "settings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )

    op.create_table(
        "api_keys",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime),
    )

    op.create_table(
        "audit",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_at", "audit", ["at"])


def downgrade() -> None:
    raise NotImplementedError("the store is only upgraded; restore a backup to go back")
