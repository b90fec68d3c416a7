"""TOTP secrets encrypted at rest: AES-256-GCM under the server's secret key(s).

A stored secret reads ``v1:<key id>:<base64url(nonce + ciphertext + tag)>``. The user's id is the
associated data, so a secret copied into another user's row does not decrypt; the key id says which
key opens it, so several keys can be in use at once (rotation without downtime).

The keys (32 random bytes each, base64) come from ``PROTECT_SECRET_KEY`` (one or more, comma-separated,
newest first), else from a key file (one key a line, newest first; ``#`` comments): ``--secret-key-file``
on ``serve`` (which sets ``PROTECT_SECRET_KEY_FILE`` for its workers), ``PROTECT_SECRET_KEY_FILE``, else
``<db>.key`` beside a SQLite database, or ``secret.key`` in the data folder (paths.py) for PostgreSQL.
A missing key file is created (0600, its folder 0700) on the first open of a database that has no key yet.

The database's ``secret_keys`` table lists the ids of the keys its secrets may be under and which one is
current (new secrets are sealed under it): opening a database whose keys the source lacks is refused with
one line naming them, and a process that meets a key id it does not know reads the key file again (that
is how a running ``serve`` learns a key added by ``protect-console secrets rotate``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from .store import DbTarget, Store, StoreError, parse_db, secret_keys, users

log = logging.getLogger("protect.server")
KEY_ENV = "PROTECT_SECRET_KEY"
KEY_FILE_ENV = "PROTECT_SECRET_KEY_FILE"
KEY_FORMAT = "32 random bytes in base64 (standard or URL-safe), e.g. the output of `openssl rand -base64 32`"
VERSION = "v1"
NONCE_BYTES = 12
KEY_ID_CHARS = 12
# Wide enough for a 64-character secret (the column's old width) sealed: v1:<12>:<base64url of 12+64+16 bytes>.
STORED_WIDTH = 160
_REGISTER_LOCK = 724_0006  # PostgreSQL advisory lock: the first key a database registers


class SecretKeyError(StoreError):
    """The secret key cannot be had: a one-line reason naming its source (and the key ids needed).

    ``for_api``: the same for an API answer, without the server's paths."""

    def __init__(self, message: str, for_api: str | None = None) -> None:
        super().__init__(message)
        self.for_api = for_api or "TOTP secrets cannot be read: the server's secret key is not usable (see its log)"


class SecretUnreadable(Exception):
    """A stored secret that does not open for its user: altered, copied from another row, or never encrypted."""


@dataclass(frozen=True)
class KeySource:
    """Where the keys come from: ``PROTECT_SECRET_KEY``, or a key file."""

    path: Path | None  # None: the environment variable

    @property
    def is_env(self) -> bool:
        return self.path is None

    @property
    def kind(self) -> str:
        """For API answers: which kind of source, without the server's paths."""
        return KEY_ENV if self.path is None else "the server's key file"

    def __str__(self) -> str:
        return KEY_ENV if self.path is None else f"the key file {self.path}"


def key_source(target: DbTarget) -> KeySource:
    """``PROTECT_SECRET_KEY`` when set, else the key file for ``target`` (see the module's docstring)."""
    if os.environ.get(KEY_ENV, "").strip():
        return KeySource(None)
    configured = os.environ.get(KEY_FILE_ENV, "").strip()
    if configured:
        return KeySource(Path(configured).expanduser())
    if target.path is not None:
        return KeySource(Path(str(target.path) + ".key"))
    from .paths import default_postgres_key_file

    return KeySource(default_postgres_key_file())


def key_id(key: bytes) -> str:
    """A key's public name: a hash of it (it says which key opens a secret, and reveals nothing of it)."""
    return hashlib.sha256(b"protect-secret-key-id:" + key).hexdigest()[:KEY_ID_CHARS]


def new_key() -> str:
    """A fresh key as a key file or ``PROTECT_SECRET_KEY`` holds it."""
    return base64.b64encode(os.urandom(32)).decode()


def parse_key(text: str, where: str) -> bytes:
    value = text.strip().replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SecretKeyError(f"{where} holds a key that is not base64: a key is {KEY_FORMAT}") from None
    if len(key) != 32:
        raise SecretKeyError(f"{where} holds a key of {len(key)} bytes: a key is {KEY_FORMAT}")
    return key


def _read_source(source: KeySource) -> list[bytes]:
    """The keys, newest first. A missing key file is FileNotFoundError (the caller decides whether to make one);
    anything else wrong is SecretKeyError naming the source."""
    if source.path is None:
        texts = [t for t in os.environ.get(KEY_ENV, "").split(",") if t.strip()]
    else:
        try:
            content = source.path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise SecretKeyError(f"cannot read {source}: {reason}") from None
        texts = [line for line in content.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not texts:
        raise SecretKeyError(f"{source} holds no key: it needs one or more, each {KEY_FORMAT}")
    return [parse_key(text, str(source)) for text in texts]


def _make_dir(folder: Path) -> None:
    """A missing folder is made 0700; an existing one is left as its owner set it."""
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_key_file(path: Path, keys: list[str], *, create_only: bool = False) -> bool:
    """Write ``keys`` (newest first) to ``path``, mode 0600, replacing it atomically.

    ``create_only``: only if there is no file yet (False when another process made it first)."""
    _make_dir(path.parent)
    body = (
        "# Protect secret keys (TOTP secrets at rest), newest first. Back this file up; keep it 0600.\n"
        + "".join(k + "\n" for k in keys)
    ).encode()
    if create_only:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        return True
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    return True


class SecretBox:
    """The keys of one source, ready to seal and open secrets. Thread-safe; one per store."""

    def __init__(self, source: KeySource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._aead: dict[str, AESGCM] = {}
        self._ids: list[str] = []
        self._file_state: tuple[int, int, int] | None = None
        self._reported: set[str] = set()
        self.reload()

    @property
    def ids(self) -> list[str]:
        """The source's key ids, newest first."""
        return list(self._ids)

    def reload(self) -> None:
        keys = _read_source(self.source)
        state = self._stat()
        with self._lock:
            # The AESGCM objects are kept (made once per key), never the plaintexts they open.
            self._aead = {key_id(k): self._aead.get(key_id(k)) or AESGCM(k) for k in keys}
            self._ids = [key_id(k) for k in keys]
            self._file_state = state
        self._warn_if_readable()

    def _warn_if_readable(self) -> None:
        if self.source.path is None or self._file_state is None:
            return
        try:
            mode = self.source.path.stat().st_mode & 0o777
        except OSError:
            return
        if mode & 0o077:
            log.warning(
                "%s is mode %s: anyone who can read it can read the TOTP secrets; chmod 600 it",
                self.source,
                oct(mode)[2:].zfill(3),
            )

    def _stat(self) -> tuple[int, int, int] | None:
        if self.source.path is None:
            return None
        try:
            st = self.source.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def key(self, kid: str) -> AESGCM:
        """The key ``kid``; when unknown, the key file is read again if it changed (a rotation elsewhere)."""
        aead = self._aead.get(kid)
        if aead is None:
            if self.source.path is not None and self._stat() != self._file_state:
                try:
                    self.reload()
                except (FileNotFoundError, SecretKeyError):
                    pass  # reported below as the key that is missing
                aead = self._aead.get(kid)
            if aead is None:
                error = missing_key_error(self.source, [kid])
                if kid not in self._reported:  # once per process: every check would say it again
                    self._reported.add(kid)
                    log.error("%s", error)
                raise error
        return aead

    def seal(self, user_id: str, secret: str, kid: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.key(kid).encrypt(nonce, secret.encode(), _aad(user_id))
        return f"{VERSION}:{kid}:{base64.urlsafe_b64encode(nonce + sealed).rstrip(b'=').decode()}"

    def open(self, user_id: str, stored: str) -> str:
        """The secret in ``stored`` (user ``user_id``'s). SecretUnreadable when it is not a secret sealed for
        this user; SecretKeyError when the key it is under is not at hand."""
        version, _, rest = stored.partition(":")
        kid, _, blob = rest.partition(":")
        if version != VERSION or len(kid) != KEY_ID_CHARS or not blob:
            raise SecretUnreadable("is not encrypted (plain text from before encryption, or altered)")
        aead = self.key(kid)
        try:
            raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(user_id)).decode()
        except (InvalidTag, binascii.Error, ValueError, UnicodeDecodeError):
            raise SecretUnreadable("does not decrypt for this user (altered, or copied from another user)") from None


def _aad(user_id: str) -> bytes:
    return b"protect-totp-secret:" + user_id.encode()


def missing_key_error(source: KeySource, kids: list[str]) -> SecretKeyError:
    which = ", ".join(kids)
    lacks = "does not exist" if source.path is not None and not source.path.exists() else "does not hold it"
    return SecretKeyError(
        f"TOTP secrets in this database are encrypted under key id {which}, and {source} {lacks}: "
        f"restore that key (from the backup of the key file, or set {KEY_ENV}); a new key cannot open them",
        f"TOTP secrets cannot be read: they are under key id {which}, which {source.kind} does not hold",
    )


# ------------------------------------------------------------------ the database's keys


def registered(conn: Connection) -> list[tuple[str, bool]]:
    """The database's key ids and whether each is current, current first."""
    rows = conn.execute(
        select(secret_keys.c.id, secret_keys.c.is_current).order_by(
            secret_keys.c.is_current.desc(), secret_keys.c.created_at.desc(), secret_keys.c.id
        )
    )
    return [(r.id, bool(r.is_current)) for r in rows]


def current_key_id(conn: Connection) -> str | None:
    return conn.execute(select(secret_keys.c.id).where(secret_keys.c.is_current)).scalar()


def make_current(conn: Connection, kid: str, now: datetime) -> None:
    """``kid`` becomes the key new secrets are sealed under (registered if new)."""
    if conn.execute(select(secret_keys.c.id).where(secret_keys.c.id == kid)).first() is None:
        conn.execute(insert(secret_keys).values(id=kid, created_at=now, is_current=False))
    conn.execute(update(secret_keys).values(is_current=secret_keys.c.id == kid))


def open_box(conn: Connection, target: DbTarget) -> SecretBox:
    """The box for the database on ``conn``: its keys loaded and checked against those the database lists.

    A missing key file is created when the database lists no key yet; a database listing keys the source
    lacks is SecretKeyError naming them."""
    source = key_source(target)
    held = registered(conn)
    try:
        box = SecretBox(source)
    except FileNotFoundError:
        if held:
            raise missing_key_error(source, [kid for kid, _ in held]) from None
        assert source.path is not None
        write_key_file(source.path, [new_key()], create_only=True)  # or another process made it first
        box = SecretBox(source)
    missing = [kid for kid, _ in held if kid not in box.ids]
    if missing:
        raise missing_key_error(source, missing)
    return box


def ensure_current(conn: Connection, box: SecretBox, now: datetime) -> str:
    """The database's current key id; a database without one (no secret sealed yet) takes the source's newest.

    Registered with the first secret, not on open: a database copied before that (a template) stays free to
    go with any key."""
    kid = current_key_id(conn)
    if kid is None:
        if conn.dialect.name == "postgresql":  # two processes sealing the first secrets at once: one key wins
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_REGISTER_LOCK})")
            kid = current_key_id(conn)
        if kid is None:
            kid = box.ids[0]
            make_current(conn, kid, now)
    return kid


def target_of(conn: Connection) -> DbTarget:
    """The database ``conn`` is connected to (for the key file's default place)."""
    url = conn.engine.url
    if conn.dialect.name == "sqlite":
        return parse_db(Path(url.database or ""))
    return DbTarget(url)


_BOX = "secretbox"


def attach(store: Store, conn: Connection) -> SecretBox:
    """Load and check the store's keys (``open_store`` calls it on start): SecretKeyError when they are missing."""
    box = open_box(conn, store.target or target_of(conn))
    store.caches[_BOX] = box
    return box


def box_of(store: Store) -> SecretBox:
    """The store's box (loaded on first use for a store not opened by ``open_store``)."""
    box = store.caches.get(_BOX)
    if box is None:
        with store.read() as conn:
            box = attach(store, conn)
    return box


def reveal(store: Store, user_id: str, stored: str) -> str:
    """User ``user_id``'s TOTP secret from its stored form (see :meth:`SecretBox.open`)."""
    box = store.caches.get(_BOX) or box_of(store)
    return box.open(user_id, stored)


def seal(store: Store, conn: Connection, user_id: str, secret: str) -> str:
    """``secret`` sealed for user ``user_id`` under the database's current key (read in ``conn``'s transaction)."""
    box = box_of(store)
    return box.seal(user_id, secret, ensure_current(conn, box, datetime.utcnow()))


# ------------------------------------------------------------------ status, rotation, retirement

BATCH = 500


def _prefix(kid: str) -> str:
    return f"{VERSION}:{kid}:"


def counts(conn: Connection) -> dict[str, int]:
    """Stored secrets per key id; ``""`` counts those that are not encrypted."""
    head = func.substr(users.c.totp_secret, 1, len(_prefix("x" * KEY_ID_CHARS)))
    rows = conn.execute(select(head, func.count()).where(users.c.totp_secret.is_not(None)).group_by(head))
    out: dict[str, int] = {}
    for prefix, n in rows:
        version, _, rest = (prefix or "").partition(":")
        kid = rest.rstrip(":") if version == VERSION and rest.endswith(":") else ""
        out[kid] = out.get(kid, 0) + n
    return out


@dataclass
class Rotation:
    """What ``secrets rotate`` did."""

    key_id: str
    generated: bool  # a new key was written to the key file (else the source's newest was made current)
    reencrypted: int = 0
    unreadable: int = 0  # not encrypted, or not opening for their user: left as they are (reset their TOTP)
    previous: tuple[str, ...] = ()  # the other key ids the database still lists


def prepare(store: Store) -> str:
    """A new key written first in the key file, not used yet: copy the file to every host, then :func:`rotate`
    makes it current (several hosts with a key file each: none meets a key it does not have)."""
    box = box_of(store)
    if box.source.path is None:
        raise ValueError(f"the keys come from {KEY_ENV}: put a new key first in it on every instance instead")
    write_key_file(box.source.path, [new_key(), *_key_lines(box.source.path)])
    box.reload()
    return box.ids[0]


def rotate(store: Store, now: datetime) -> Rotation:
    """A new current key, then every secret re-encrypted under it, in batches of short transactions.

    Key file: a new key is written first (newest first, the others kept), so a running service that meets
    the new key id reads the file again; then it becomes the database's current key. A key added by
    :func:`prepare` and not used yet is taken instead of a new one. ``PROTECT_SECRET_KEY``:
    its first key becomes current (put the new key first on every instance beforehand). Secrets changed
    meanwhile (enrolled, reset) keep the newer value: each update applies only to the value it read.
    """
    box = box_of(store)
    with store.write() as conn:
        current = current_key_id(conn)
        listed = {kid for kid, _ in registered(conn)}
    generated = False
    kid = box.ids[0]
    if not box.source.is_env and (kid == current or kid in listed):
        assert box.source.path is not None
        write_key_file(box.source.path, [new_key(), *_key_lines(box.source.path)])
        box.reload()
        kid, generated = box.ids[0], True
    with store.write() as conn:
        make_current(conn, kid, now)
        _audit(conn, "secrets.rotate", {"keyId": kid, "previousKeyId": current, "generated": generated}, now)
    result = Rotation(kid, generated)
    result.reencrypted, result.unreadable = reencrypt(store, box, kid)
    with store.read() as conn:
        result.previous = tuple(k for k, is_current in registered(conn) if not is_current)
    return result


def _audit(conn: Connection, action: str, details: dict[str, Any], now: datetime) -> None:
    """Key changes are admin changes made on the database host (the audit's ``local cli``); never a key itself."""
    from ..models import Role
    from .services.audit import record
    from .services.common import Principal
    from .services.keys import LOCAL_ACTOR

    record(conn, Principal(key_id="", name=LOCAL_ACTOR, role=Role.ADMIN), action, "secrets", details, now)


def _key_lines(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text(encoding="ascii").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def reencrypt(store: Store, box: SecretBox, kid: str) -> tuple[int, int]:
    """Every secret not under ``kid`` sealed again under it; (re-encrypted, unreadable). Passes repeat until
    one finds nothing to do (a secret sealed under the old key by a write that raced the switch)."""
    done = 0
    while True:
        changed, unreadable = _pass(store, box, kid)
        done += changed
        if not changed:
            return done, unreadable


def _pass(store: Store, box: SecretBox, kid: str) -> tuple[int, int]:
    after, changed, unreadable = "", 0, 0
    while True:
        with store.read() as conn:
            rows = conn.execute(
                select(users.c.id, users.c.totp_secret)
                .where(
                    users.c.id > after,
                    users.c.totp_secret.is_not(None),
                    users.c.totp_secret.not_like(_prefix(kid) + "%"),
                )
                .order_by(users.c.id)
                .limit(BATCH)
            ).all()
        if not rows:
            return changed, unreadable
        after = rows[-1].id
        updates = []
        for user_id, stored in rows:
            try:
                updates.append((user_id, stored, box.seal(user_id, box.open(user_id, stored), kid)))
            except SecretUnreadable:
                unreadable += 1
        with store.write() as conn:
            for user_id, stored, sealed in updates:
                changed += (
                    conn.execute(
                        update(users)
                        .where(users.c.id == user_id, users.c.totp_secret == stored)
                        .values(totp_secret=sealed)
                    ).rowcount
                    or 0
                )


def retire(store: Store, kid: str, now: datetime) -> None:
    """Forget key ``kid``: no secret may be under it and it may not be current. From a key file it is removed
    too; with ``PROTECT_SECRET_KEY`` the operator drops it from the variable."""
    box = box_of(store)
    with store.write() as conn:
        held = dict(registered(conn))
        if kid not in held and kid not in box.ids:
            raise ValueError(f"no key with id {kid!r} (this database lists {', '.join(held) or 'none'})")
        if held.get(kid):
            raise ValueError(f"key {kid} is the current key: `secrets rotate` first")
        using = counts(conn).get(kid, 0)
        if using:
            raise ValueError(f"{using} secrets are still under key {kid}: `secrets rotate` re-encrypts them first")
        conn.execute(delete(secret_keys).where(secret_keys.c.id == kid))
        _audit(conn, "secrets.retire", {"keyId": kid}, now)
        if box.source.path is not None and kid in box.ids:
            path = box.source.path
            write_key_file(path, [line for line in _key_lines(path) if key_id(parse_key(line, str(path))) != kid])
    if box.source.path is not None:
        box.reload()


def status(store: Store) -> dict[str, Any]:
    """Key source, key ids (current first, with their secrets), and secrets not encrypted."""
    box = box_of(store)
    with store.read() as conn:
        held = registered(conn)
        per_key = counts(conn)
    listed = [kid for kid, _ in held]
    keys = [
        {"id": kid, "current": is_current, "inSource": kid in box.ids, "secrets": per_key.get(kid, 0)}
        for kid, is_current in held
    ]
    keys += [
        {"id": kid, "current": False, "inSource": True, "secrets": per_key.get(kid, 0), "unused": True}
        for kid in box.ids
        if kid not in listed
    ]
    unknown = sum(n for k, n in per_key.items() if k and k not in listed and k not in box.ids)
    return {"source": str(box.source), "keys": keys, "plainText": per_key.get("", 0), "unknownKey": unknown}
