"""TOTP secrets encrypted at rest (AES-GCM, console/server/secretbox.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

- ``secret_keys``: the ids of the keys this database's secrets are sealed under, and the current one.
- ``users.totp_secret`` widens from 64 to 160 characters (a sealed secret is ``v1:<key id>:<base64url>``).
  On SQLite only the declared type changes, in the schema text: SQLite does not enforce VARCHAR lengths, and
  rebuilding ``users`` (batch mode) would drop it, which under ``foreign_keys=ON`` deletes every device and
  enrolment code by their ON DELETE CASCADE, and would drop the search index's triggers.
- Every plain-text secret is sealed under the database's key, loaded as the service loads it
  (``PROTECT_SECRET_KEY`` or the key file, which is created when missing): none is left in plain text.
"""

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from alembic import op

from console.server import secretbox

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OLD_WIDTH, NEW_WIDTH = 64, secretbox.STORED_WIDTH
BATCH = 2000
_users = sa.table("users", sa.column("id", sa.String), sa.column("totp_secret", sa.String))


def upgrade() -> None:
    op.create_table(
        "secret_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,  # a database made before migrations at this schema is upgraded from its inferred 0002
    )
    _set_width(OLD_WIDTH, NEW_WIDTH)
    conn = op.get_bind()
    plain = _users.c.totp_secret.is_not(None) & _users.c.totp_secret.not_like(secretbox.VERSION + ":%")
    if conn.execute(sa.select(_users.c.id).where(plain).limit(1)).first() is None:
        return  # nothing to seal: the key is set up on the first open (serve)
    box = secretbox.open_box(conn, secretbox.target_of(conn))
    kid = secretbox.ensure_current(conn, box, datetime.utcnow())
    _rewrite(conn, plain, lambda user_id, secret: box.seal(user_id, secret, kid))


def downgrade() -> None:
    conn = op.get_bind()
    sealed = _users.c.totp_secret.like(secretbox.VERSION + ":%")
    if conn.execute(sa.select(_users.c.id).where(sealed).limit(1)).first() is not None:
        box = secretbox.SecretBox(secretbox.key_source(secretbox.target_of(conn)))
        _rewrite(conn, sealed, box.open)
    _set_width(NEW_WIDTH, OLD_WIDTH)
    op.drop_table("secret_keys")


def _rewrite(conn: sa.Connection, which: sa.ColumnElement[bool], change: Callable[[str, str], str]) -> None:
    """Each secret matching ``which`` replaced by ``change(user_id, secret)``, a batch at a time (by id)."""
    after = ""
    write = sa.update(_users).where(_users.c.id == sa.bindparam("uid")).values(totp_secret=sa.bindparam("value"))
    while True:
        rows = conn.execute(
            sa.select(_users.c.id, _users.c.totp_secret)
            .where(which, _users.c.id > after)
            .order_by(_users.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        conn.execute(write, [{"uid": user_id, "value": change(user_id, secret)} for user_id, secret in rows])
        after = rows[-1].id


def _set_width(old: int, new: int) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        op.alter_column(
            "users", "totp_secret", type_=sa.String(new), existing_type=sa.String(old), existing_nullable=True
        )
        return
    # SQLite's documented way to change what does not touch the stored data (ALTER TABLE, "other kinds of
    # table schema changes"): edit the CREATE TABLE text and bump the schema version, in this transaction.
    before, after = f"totp_secret VARCHAR({old})", f"totp_secret VARCHAR({new})"
    schema = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'users'").scalar()
    if schema is None or schema.count(before) != 1:
        return  # not the shape the migrations made: its declared type is left as it is
    version = conn.exec_driver_sql("PRAGMA schema_version").scalar_one()
    conn.exec_driver_sql("PRAGMA writable_schema=ON")
    try:
        conn.exec_driver_sql(
            "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = 'users'", (before, after)
        )
        conn.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    finally:
        conn.exec_driver_sql("PRAGMA writable_schema=OFF")
