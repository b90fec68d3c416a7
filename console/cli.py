"""``protect-console``: the console (default), the service, and a scriptable CLI twin.

The twin commands (users, devices, mfa, totp, settings, privacy, attempts) go
through the same :class:`~console.client.ProtectClient` as the console. Heavy
imports (Textual, FastAPI, SQLAlchemy, uvicorn) happen inside the subcommand
that needs them, so ``protect-console users list`` starts in a blink.

Exit codes: 0 done, 1 error (one ``error: ...`` line on stderr), 2 usage error or
refused without confirmation, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import ConfigError, ConnectionProfile, load_profile
from .safe_text import printable

ROLES = ("admin", "helpdesk", "readonly", "service")
PUSH_STATUSES = ("pending", "approved", "denied", "expired", "blocked")
PAGE_MAX = 100  # the API's largest page


class UsageError(Exception):
    """Bad arguments, or a change refused for want of confirmation: exit 2."""


class Cancelled(Exception):
    """The user answered no at a confirmation prompt."""


class _Failure(Exception):
    """A command could not do what was asked: exit 1."""


# ------------------------------------------------------------------ helpers


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {value}")
    return value


def _err(message: str) -> None:
    # Server messages and user input are untrusted: one safe line, always.
    print(f"error: {printable(message)}", file=sys.stderr)


def _out(message: str) -> None:
    """A result line on stdout (untrusted parts made safe)."""
    print(printable(message))


def _say(message: str) -> None:
    """A progress/status line for humans, kept off stdout so scripts read only results."""
    print(printable(message), file=sys.stderr)


def _console():  # noqa: ANN202 - rich imported lazily
    from rich.console import Console

    # Piped output is read by people in pagers, not cut at 80 columns.
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "160") or 160)
    return Console(file=sys.stdout, highlight=False, width=width)


def _text(value: object, style: str = ""):  # noqa: ANN202
    from rich.text import Text

    return Text(printable(value), style=style)


def _table(*columns: str, title: str | None = None):  # noqa: ANN202
    from rich.table import Table

    # The title may carry a username: Text, never markup. Column names are ours.
    table = Table(title=_text(title) if title else None, title_justify="left", header_style="bold", show_edge=True)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


_STATUS_STYLE = {
    "approved": "green",
    "denied": "red",
    "blocked": "magenta",
    "expired": "yellow",
    "pending": "cyan",
    "ENROLLED": "green",
    "NOT_ENROLLED": "dim",
    "ACTIVATED": "green",
    "SUSPENDED": "red",
    "STAGED": "yellow",
}


def _status(value: object):  # noqa: ANN202
    text = str(getattr(value, "value", value))
    return _text(text, _STATUS_STYLE.get(text, ""))


def _print_json(data: Any) -> None:
    # ensure_ascii: a hostile name can't smuggle terminal controls through `jq`-less viewing.
    print(json.dumps(data, indent=2, sort_keys=False))


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True)


def _display_name(user: Any) -> str:
    return user.displayname or " ".join(p for p in (user.firstname, user.lastname) if p)


def _confirm(question: str, *, yes: bool, action: str) -> None:
    """Ask ``question`` on a terminal; without one, only ``--yes`` lets a change through."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"not {action} without confirmation: stdin is not a terminal; pass --yes")
    sys.stderr.write(f"{printable(question)} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        raise Cancelled


async def _collect(fetch: Callable[[int, int], Awaitable[Any]], limit: int) -> tuple[list[Any], int]:
    """Up to ``limit`` items, page by page (the API serves at most 100 a request)."""
    items: list[Any] = []
    total = 0
    while len(items) < limit:
        page = await fetch(len(items), min(PAGE_MAX, limit - len(items)))
        total = page.totalCount
        items.extend(page.results)
        if not page.results or len(items) >= total:
            break
    return items, total


# ------------------------------------------------------------------ the twin


def _profile(args: argparse.Namespace) -> ConnectionProfile:
    return load_profile(args.profile, url=args.url, readonly=True if args.readonly else None)


def _run_twin(args: argparse.Namespace) -> int:
    from .client import ProtectClient

    profile = _profile(args)
    if getattr(args, "changing", False) and profile.readonly:
        raise ConfigError(f"profile {profile.name!r} is read-only: nothing changed")

    async def run() -> int:
        async with ProtectClient(profile.url, profile.api_key, retries=2) as client:
            return await args.handler(client, args)

    return asyncio.run(run())


async def users_list(client: Any, args: argparse.Namespace) -> int:
    filters = [_normalise_filter(f) for f in args.filter]
    users, total = await _collect(
        lambda skip, limit: client.list_users(
            skip=skip, limit=limit, filters=filters, search=args.search or None, sort=args.sort
        ),
        args.limit,
    )
    if args.json:
        _print_json({"totalCount": total, "results": [_dump(u) for u in users]})
        return 0
    table = _table("Username", "Name", "Email", "State", "Push", "TOTP", "WebAuthn", "ID")
    for u in users:
        e = u.mfaEnrollment
        state = _status(u.state)
        if u.account_locked:
            state.append(" locked", "red")
        table.add_row(
            _text(u.username), _text(_display_name(u)), _text(u.email), state,
            _status(e.pushStatus), _status(e.totpStatus), _status(e.webAuthnStatus), _text(u.id, "dim"),
        )
    console = _console()
    console.print(table)
    console.print(_text(f"{len(users)} of {total} users"))
    return 0


def _normalise_filter(value: str) -> str:
    # `state=ACTIVATED` is friendlier to type than `state:$eq:ACTIVATED` (no shell quoting of `$`).
    if ":$" not in value and "=" in value:
        field, _, rest = value.partition("=")
        return f"{field.strip()}:$eq:{rest.strip()}"
    return value


async def users_show(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    devices = await client.push_endpoints(user.id)
    attempts = await client.push_attempts(user_id=user.id, limit=args.attempts)
    if args.json:
        _print_json(
            {
                "user": _dump(user),
                "pushEndpoints": [_dump(d) for d in devices],
                "pushAttempts": {"totalCount": attempts.totalCount, "results": [_dump(a) for a in attempts.results]},
            }
        )
        return 0
    console = _console()
    e = user.mfaEnrollment
    facts = _table("Field", "Value", title=f"User {user.username}")
    rows: list[tuple[str, Any]] = [
        ("ID", user.id),
        ("Username", user.username),
        ("Name", _display_name(user)),
        ("Email", user.email),
        ("State", user.state.value + (" (locked)" if user.account_locked else "")),
        ("Created", _when(user.created)),
        ("MFA overall", e.overallStatus.value),
        ("Push", e.pushStatus.value),
        ("TOTP", e.totpStatus.value),
        ("WebAuthn", e.webAuthnStatus.value),
    ]
    if user.mfa.exclusion:
        rows.append(("MFA grace until", _when(user.mfa.exclusionUntil)))
    for label, value in rows:
        facts.add_row(_text(label, "bold"), _status(value) if label in ("State", "Push", "TOTP", "WebAuthn", "MFA overall") else _text(value))
    console.print(facts)
    if devices:
        table = _table("Device", "Make/model", "OS", "App", "Biometric", "State", "Enrolled", "Last used", "Diagnostics")
        for d in devices:
            table.add_row(
                _text(d.name), _text(f"{d.device.make} {d.device.model}"), _text(f"{d.device.os} {d.device.osVersion}"),
                _text(d.device.appVersion), _text("on" if d.device.uvEnabled else "off"), _text(d.state),
                _text(_when(d.enrollmentDate)), _text(_when(d.lastUsedDate)),
                _text("opted out" if d.privacy.diagnosticsOptOut else "shared"),
            )
        console.print(table)
    else:
        console.print(_text("No push device enrolled."))
    if attempts.results:
        console.print(_attempts_table(attempts.results, title=f"Recent push attempts ({attempts.totalCount} in all)"))
    return 0


async def devices_unenroll(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    devices = await client.push_endpoints(user.id)
    if not devices:
        raise _Failure(f"user {user.username} has no push device to unenroll")
    for device in devices:
        what = f"device {device.name} ({device.device.make} {device.device.model})"
        _confirm(f"Unenroll {what} of user {user.username}?", yes=args.yes, action="unenrolling")
        await client.unenroll_device(user.id, device.id)
        _out(f"Unenrolled {what} of user {user.username}.")
    return 0


async def mfa_reset(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    grace = f" with a {args.grace_days}-day grace period to enroll again" if args.grace_days else ""
    _confirm(
        f"Reset all MFA (TOTP secret and push device) of user {user.username}{grace}?",
        yes=args.yes, action="resetting MFA",
    )
    after = await client.reset_mfa(user.id, grace_days=args.grace_days)
    until = f"; grace period until {_when(after.mfa.exclusionUntil)}" if after.mfa.exclusion else ""
    _out(f"Reset MFA of user {after.username}{until}.")
    return 0


async def totp_reset(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    _confirm(f"Reset the TOTP secret of user {user.username}?", yes=args.yes, action="resetting TOTP")
    result = await client.reset_totp(user.id)
    _out(f"Reset TOTP of user {user.username}: TOTP is now {result.totpStatus.value}.")
    return 0


@dataclass(frozen=True)
class SettingSpec:
    """A setting as the CLI names it, and where it lives in the API's document."""

    name: str
    path: tuple[str, ...]
    kind: type
    meaning: str
    low: int | None = None
    high: int | None = None

    def read(self, document: dict[str, Any]) -> Any:
        for part in self.path:
            document = document[part]
        return document

    def patch(self, value: Any) -> dict[str, Any]:
        body: Any = value
        for part in reversed(self.path):
            body = {part: body}
        return body

    def parse(self, text: str) -> Any:
        if self.kind is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "on", "yes", "1"):
                return True
            if lowered in ("false", "off", "no", "0"):
                return False
            raise UsageError(f"{self.name}: expected true or false, got {text!r}")
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{self.name}: expected a whole number, got {text!r}") from None
        if not self.low <= value <= self.high:  # type: ignore[operator]
            raise UsageError(f"{self.name}: must be between {self.low} and {self.high}, got {value}")
        return value

    @property
    def allowed(self) -> str:
        return "true/false" if self.kind is bool else f"{self.low}..{self.high}"


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("push.max-concurrent", ("push", "concurrentLimit", "max"), int,
                "Pending pushes allowed per user and resource within the timeout; more are blocked "
                "(the guard against push bombing).", 1, 10),
    SettingSpec("push.limit-enabled", ("push", "concurrentLimit", "enabled"), bool,
                "Whether the concurrent push limit is enforced at all."),
    SettingSpec("push.timeout", ("push", "timeoutSeconds"), int,
                "Seconds a push can be answered; later answers are refused as expired.", 30, 300),
    SettingSpec("push.require-biometric", ("push", "requireUserVerification"), bool,
                "Approvals must carry biometric or passcode verification from the device."),
    SettingSpec("totp.max-failures", ("totp", "maxFailures"), int,
                "Consecutive bad codes before TOTP locks until an admin resets it.", 1, 20),
)
_SETTING_ALIASES = {spec.name: spec for spec in SETTINGS} | {".".join(spec.path): spec for spec in SETTINGS}


async def settings_get(client: Any, args: argparse.Namespace) -> int:
    settings, _etag = await client.get_settings()
    document = settings.model_dump(mode="json")
    if args.json:
        _print_json(document)
        return 0
    table = _table("Setting", "Value", "Allowed", "Meaning")
    for spec in SETTINGS:
        value = spec.read(document)
        table.add_row(_text(spec.name, "bold"), _text(str(value).lower() if spec.kind is bool else value),
                      _text(spec.allowed), _text(spec.meaning))
    _console().print(table)
    return 0


async def settings_set(client: Any, args: argparse.Namespace) -> int:
    from .client import PreconditionFailed

    spec = _SETTING_ALIASES.get(args.name)
    if spec is None:
        raise UsageError(f"unknown setting {args.name!r}; choose one of {', '.join(s.name for s in SETTINGS)}")
    new = spec.parse(args.value)
    settings, etag = await client.get_settings()
    old = spec.read(settings.model_dump(mode="json"))
    if old == new:
        _out(f"{spec.name} is already {args.value}; nothing changed.")
        return 0
    _confirm(f"Change {spec.name} from {old} to {new}?", yes=args.yes, action="changing settings")
    try:
        updated, _ = await client.update_settings(spec.patch(new), etag)
    except PreconditionFailed:
        raise _Failure(
            "someone else changed the settings since they were read; nothing changed. "
            "Run `protect-console settings get` and try again"
        ) from None
    _out(f"{spec.name}: {old} -> {spec.read(updated.model_dump(mode='json'))}")
    return 0


async def privacy(client: Any, args: argparse.Namespace) -> int:
    summary = await client.privacy_summary()
    opted_out = True if args.opted_out else None
    devices, total = await _collect(
        lambda skip, limit: client.privacy_devices(opted_out=opted_out, skip=skip, limit=limit), args.limit
    )
    if args.json:
        _print_json({"summary": _dump(summary), "devices": {"totalCount": total, "results": [_dump(d) for d in devices]}})
        return 0
    console = _console()
    share = f"{summary.optedOut / summary.devices:.0%}" if summary.devices else "0%"
    console.print(_text(f"{summary.devices} devices, {summary.optedOut} opted out of diagnostics ({share}), "
                        f"{summary.optedIn} sharing."))
    console.print(_text("Collected: app and device diagnostics and usage data for troubleshooting. "
                        "Not collected: user information. Opted-out devices' reports are counted and dropped.", "dim"))
    table = _table("User", "Email", "Device", "OS", "App", "Diagnostics", "Changed")
    for d in devices:
        table.add_row(
            _text(d.user.username), _text(d.user.email), _text(f"{d.device.make} {d.device.model}"),
            _text(f"{d.device.os} {d.device.osVersion}"), _text(d.device.appVersion),
            _text("opted out", "yellow") if d.privacy.diagnosticsOptOut else _text("shared"),
            _text(_when(d.privacy.updatedAt)),
        )
    console.print(table)
    console.print(_text(f"{len(devices)} of {total} {'opted-out ' if args.opted_out else ''}devices"))
    return 0


def _attempts_table(attempts: Sequence[Any], title: str | None = None):  # noqa: ANN202
    table = _table("Created", "User", "Resource", "Status", "Fraud", "App", "Location", "IP", title=title)
    for a in attempts:
        table.add_row(
            _text(_when(a.createdAt)), _text(a.username or a.userId), _text(a.resource), _status(a.status),
            _text("FRAUD", "bold red") if a.fraud else _text(""),
            _text(a.context.app or ""), _text(a.context.location or ""), _text(a.context.ip or ""),
        )
    return table


async def attempts(client: Any, args: argparse.Namespace) -> int:
    user_id = (await client.find_user(args.user)).id if args.user else None
    items, total = await _collect(
        lambda skip, limit: client.push_attempts(user_id=user_id, status=args.status, skip=skip, limit=limit),
        args.limit,
    )
    if args.json:
        _print_json({"totalCount": total, "results": [_dump(a) for a in items]})
        return 0
    console = _console()
    console.print(_attempts_table(items))
    console.print(_text(f"{len(items)} of {total} push attempts, newest first"))
    return 0


# ------------------------------------------------------------ local commands


def cmd_tui(args: argparse.Namespace) -> int:
    profile = _profile(args)
    from .tui.app import ProtectConsoleApp  # Textual only when the console runs

    app = ProtectConsoleApp(profile, open_user=args.user)
    app.run()
    return app.return_code or 0


def _db_path(args: argparse.Namespace) -> Path:
    if args.db is not None:
        return Path(args.db).expanduser()
    from .server.paths import default_db_path

    return default_db_path()


def _open_store(db: Path):  # noqa: ANN202
    """The local database, or a one-line reason it cannot be opened."""
    from .server.store import open_store

    try:
        return open_store(db)
    except OSError as exc:
        raise _Failure(f"cannot open database {db}: {exc.strerror or exc}") from None
    except Exception as exc:  # SQLAlchemy's errors: not a database, locked, read-only...
        reason = getattr(exc, "orig", None) or exc
        raise _Failure(f"cannot open database {db}: {reason}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .server.app import create_app
    from .server.services.keys import ensure_bootstrap_key

    db = _db_path(args)
    store = _open_store(db)
    key = ensure_bootstrap_key(store)
    if key:
        print("Created the first admin API key. It is shown once and cannot be shown again; store it now:")
        print(key, flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _say(f"warning: serving plain HTTP on {args.host}; put TLS in front before using it over a network")
    _say(f"Protect service on http://{args.host}:{args.port} (database {db})")
    try:
        uvicorn.run(create_app(store), host=args.host, port=args.port, log_level="info")
    finally:
        store.dispose()
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from .server.services.keys import create_key

    db = _db_path(args)
    store = _open_store(db)
    try:
        try:
            key = create_key(store, args.name, args.role)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    finally:
        store.dispose()
    print(f"Created {args.role} key {printable(args.name)!r} in {db}. It is shown once; store it now:")
    print(key)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from .server.seed import seed_directory

    db = _db_path(args)
    store = _open_store(db)
    started = time.perf_counter()
    try:
        report = seed_directory(store, args.users, rng_seed=args.seed)
    finally:
        store.dispose()
    elapsed = time.perf_counter() - started
    print(f"Seeded {args.users:,} users into {db} in {elapsed:.1f} s")
    for key, value in (report or {}).items():
        print(f"  {printable(key)}: {printable(value)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.db:
        _open_store(Path(args.db).expanduser()).dispose()  # a bad path is a one-line error, before any set-up
    return run_demo(db=Path(args.db).expanduser() if args.db else None, users=args.users, role=args.role, port=args.port)


# ------------------------------------------------------------------ parsing


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (API keys come from the config file or PROTECT_CONSOLE_API_KEY)")
    group.add_argument("--profile", help="profile name in config.toml (default: default_profile)")
    group.add_argument("--url", help="backend URL, overriding the profile and PROTECT_CONSOLE_URL")
    group.add_argument("--readonly", action="store_true", help="refuse every change, whatever the key allows")


def _twin(sub: Any, name: str, handler: Callable[..., Awaitable[int]], help: str, *, changing: bool = False,
          json_flag: bool = True) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help)
    _connection_flags(parser)
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    if changing:
        parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(run=_run_twin, handler=handler, changing=changing)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protect-console",
        description="Keyboard-driven admin console for Protect push and TOTP MFA, its service, and a scriptable CLI.",
        epilog="Without a command, opens the console (same as `protect-console tui`).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    tui = sub.add_parser("tui", help="open the full-screen console (default)")
    _connection_flags(tui)
    tui.add_argument("--user", metavar="EMAIL|USERNAME|ID", help="open this user's detail straight away")
    tui.set_defaults(run=cmd_tui)

    serve = sub.add_parser("serve", help="run the Protect service")
    serve.add_argument("--db", help="SQLite file (default: protect.db in the XDG data dir)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="port (default 8080)")
    serve.set_defaults(run=cmd_serve)

    keys = sub.add_parser("keys", help="manage API keys (local database)")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = keys_sub.add_parser("create", help="create an API key; it is printed once, alone on the last line")
    create.add_argument("--name", required=True, help="who or what uses the key (shown in the audit log)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--db", help="SQLite file (default: protect.db in the XDG data dir)")
    create.set_defaults(run=cmd_keys_create)

    seed = sub.add_parser("seed", help="write a synthetic directory into the database")
    seed.add_argument("--users", type=_positive_int, required=True, metavar="N")
    seed.add_argument("--db", help="SQLite file (default: protect.db in the XDG data dir)")
    seed.add_argument("--seed", type=int, default=1, metavar="INT", help="random seed (default 1)")
    seed.set_defaults(run=cmd_seed)

    demo = sub.add_parser("demo", help="run the service with synthetic users and live activity, and open the console")
    demo.add_argument("--db", help="SQLite file to use (default: a fresh one in a temporary directory)")
    demo.add_argument("--users", type=_positive_int, default=5000, metavar="N", help="users to seed (default 5000)")
    demo.add_argument("--role", choices=("admin", "helpdesk", "readonly"), default="admin",
                      help="role of the console's key (default admin)")
    demo.add_argument("--port", type=_port, default=0, help="port for the service (default: any free port)")
    demo.set_defaults(run=cmd_demo)

    users = sub.add_parser("users", help="list and show users")
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    ls = _twin(users_sub, "list", users_list, "list users")
    ls.add_argument("--search", metavar="S", help="case-insensitive search over username, email and names")
    ls.add_argument("--filter", metavar="F", action="append", default=[],
                    help="field:$op:value or field=value, repeatable (ANDed), e.g. mfaEnrollment.pushStatus=ENROLLED")
    ls.add_argument("--sort", metavar="FIELDS", help="e.g. 'username' or '-created'")
    ls.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="how many users (default 20)")
    show = _twin(users_sub, "show", users_show, "show one user, their push device and recent push attempts")
    show.add_argument("user", metavar="USER", help="email, username or id")
    show.add_argument("--attempts", type=_positive_int, default=10, metavar="N", help="recent attempts to show")

    devices = sub.add_parser("devices", help="push devices")
    devices_sub = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    unenroll = _twin(devices_sub, "unenroll", devices_unenroll, "unenroll a user's push device",
                     changing=True, json_flag=False)
    unenroll.add_argument("user", metavar="USER", help="email, username or id")

    mfa = sub.add_parser("mfa", help="multi-factor enrollment")
    mfa_sub = mfa.add_subparsers(dest="mfa_command", metavar="ACTION", required=True)
    reset = _twin(mfa_sub, "reset", mfa_reset, "reset all of a user's MFA (TOTP and push device)",
                  changing=True, json_flag=False)
    reset.add_argument("user", metavar="USER", help="email, username or id")
    reset.add_argument("--grace-days", type=_positive_int, metavar="N",
                       help="days the user may log in without MFA while enrolling again")

    totp = sub.add_parser("totp", help="TOTP verification codes")
    totp_sub = totp.add_subparsers(dest="totp_command", metavar="ACTION", required=True)
    treset = _twin(totp_sub, "reset", totp_reset, "reset a user's TOTP secret", changing=True, json_flag=False)
    treset.add_argument("user", metavar="USER", help="email, username or id")

    settings = sub.add_parser("settings", help="Protect settings")
    settings_sub = settings.add_subparsers(dest="settings_command", metavar="ACTION", required=True)
    _twin(settings_sub, "get", settings_get, "show the settings, their allowed ranges and meaning")
    sset = _twin(settings_sub, "set", settings_set, "change one setting (safe against concurrent changes)",
                 changing=True, json_flag=False)
    sset.add_argument("name", metavar="NAME", help=", ".join(s.name for s in SETTINGS))
    sset.add_argument("value", metavar="VALUE")

    priv = _twin(sub, "privacy", privacy, "diagnostics opt-out summary and devices")
    priv.add_argument("--opted-out", action="store_true", help="only devices that opted out")
    priv.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="how many devices (default 20)")

    att = _twin(sub, "attempts", attempts, "push attempts, newest first")
    att.add_argument("--user", metavar="USER", help="only this user's attempts (email, username or id)")
    att.add_argument("--status", choices=PUSH_STATUSES)
    att.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="how many attempts (default 20)")

    return parser


def _with_default_command(argv: list[str]) -> list[str]:
    # `protect-console --profile prod` means `protect-console tui --profile prod`.
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        return ["tui", *argv]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``protect-console``; returns the exit code."""
    from .client import ApiError

    args_list = _with_default_command(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse has printed usage or help
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.run(args)
    except UsageError as exc:
        _err(str(exc))
        return 2
    except Cancelled:
        _err("cancelled; nothing changed")
        return 1
    except (ConfigError, ApiError, _Failure) as exc:
        _err(str(exc))
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        # `protect-console users list | head`: the reader left; nothing to report.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 1
    except Exception as exc:  # never a traceback for the user; PROTECT_CONSOLE_DEBUG=1 shows it
        if os.environ.get("PROTECT_CONSOLE_DEBUG"):
            raise
        _err(f"unexpected {type(exc).__name__}: {exc} (set PROTECT_CONSOLE_DEBUG=1 for details)")
        return 1
