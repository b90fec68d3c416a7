"""``protect-console``: the console (default), the service, and a scriptable CLI twin.

The twin commands (users, devices, enroll, mfa, totp, attack, settings, privacy, attempts)
go through the same :class:`~console.client.ProtectClient` as the console. Heavy imports
(Textual, FastAPI, SQLAlchemy, uvicorn) happen inside the subcommand that needs them, so
``protect-console users list`` starts in a blink. Limits (grace days, block minutes, setting
ranges, the TOTP code's shape) come from :mod:`console.models`, the same declarations the
service validates with, so a bad value is refused here, naming our flag, before any request.

Exit codes: 0 done (or nothing to do, which is said), 1 error (one ``error: ...`` line on
stderr) or a caller's code that is not valid, 2 usage error or refused without confirmation,
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import display, models
from .config import ConfigError, ConnectionProfile, load_profile
from .safe_text import printable

if TYPE_CHECKING:  # rich and the service load only when a command needs them
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .server.store import DbTarget, Store

WIDE_COLUMNS = 10_000  # --wide: tables take the width their values need


class UsageError(Exception):
    """Bad arguments, or a change refused for want of confirmation: exit 2."""


class Cancelled(Exception):
    """The user answered no at a confirmation prompt."""


class _Failure(Exception):
    """A command could not do what was asked: exit 1."""


# ------------------------------------------------------- limits from models


TOTP_CODE = re.compile(models.TOTP_CODE_PATTERN)

# Server field names that may still appear in an error, and the flag or argument a person typed.
FLAG_FOR_FIELD = {
    "exclusionDays": "--grace-days",
    "exclusionUntil": "--grace-days",
    "exclusion": "--grace-days",
    "minutes": "--minutes",
    "cancelPending": "--keep-pending",
    "requireUserVerification": "--require-biometric",
    "code": "CODE",
    "userId": "USER",
    "user_id": "USER",
    "search": "--search",
    "sort": "--sort",
    "filter": "--filter",
    "limit": "--limit",
    "status": "--status",
    "optedOut": "--opted-out",
}
_FIELD_PREFIX = re.compile(r"^(?P<field>[A-Za-z_][\w.]*)(?: \((?:query|path|header|body)\))?:")


def flag_message(message: str) -> str:
    """A server message with its field names replaced by our flags (``exclusionDays: ...`` -> ``--grace-days: ...``)."""
    parts = []
    for part in message.split("; "):
        match = _FIELD_PREFIX.match(part)
        if match and match["field"] in FLAG_FOR_FIELD:
            part = FLAG_FOR_FIELD[match["field"]] + ":" + part[match.end() :]
        parts.append(part)
    return "; ".join(parts)


# ------------------------------------------------------------------ helpers


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _int_in(low: int, high: int, note: str = "") -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}{note}, got {text!r}")
        return value

    return parse


def _totp_code(text: str) -> str:
    code = text.replace(" ", "").strip()
    if not TOTP_CODE.fullmatch(code):
        raise argparse.ArgumentTypeError(f"expected the 6 digits the caller reads out, got {text!r}")
    return code


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


def _console(args: argparse.Namespace | None = None) -> Console:
    from rich.console import Console

    if args is not None and getattr(args, "wide", False):
        width: int | None = WIDE_COLUMNS
    elif sys.stdout.isatty():
        width = None  # the terminal's width
    else:
        # Piped output is read by people in pagers, not cut at 80 columns.
        width = int(os.environ.get("COLUMNS", "160") or 160)
    return Console(file=sys.stdout, highlight=False, width=width)


def _text(value: object, style: str = "") -> Text:
    from rich.text import Text

    return Text(printable(value), style=style)


def _table(*columns: str, title: str | None = None, prose: Sequence[str] = (), shrink: Sequence[str] = ()) -> Table:
    """A table whose values are never split across lines: too narrow, they end in ``…`` (``--wide`` widens).

    Only ``prose`` columns (sentences such as a setting's meaning) wrap, at spaces. When the table is
    wider than the terminal, the columns in ``shrink`` give up width first, in that order, then the
    others from right to left; identity columns (username, email) are listed last or not at all.
    """
    from rich.table import Table

    # The title may carry a username: Text, never markup. Column names are ours.
    table = Table(title=_text(title) if title else None, title_justify="left", header_style="bold", show_edge=True)
    for column in columns:
        if column in prose:
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, no_wrap=True, overflow="ellipsis")
    rest = [c for c in reversed(columns) if c not in shrink]
    table.shrink_order = [*shrink, *rest]  # type: ignore[attr-defined]
    table.prose = tuple(prose)  # type: ignore[attr-defined]
    return table


_FLOOR = 6  # a squeezed column keeps this many cells (five characters and the …)
_PROSE_FLOOR = 24


def _fit(table: Any, width: int) -> None:
    """Give each column a maximum width so the whole table fits ``width``, squeezing in ``shrink_order``."""
    from rich.cells import cell_len

    columns = table.columns
    natural = []
    for column in columns:
        cells = [cell_len(getattr(cell, "plain", str(cell))) for cell in column._cells]
        natural.append(max([cell_len(str(column.header)), *cells]))
    overhead = 3 * len(columns) + 1  # borders and one space of padding either side
    excess = sum(natural) + overhead - width
    if excess <= 0:
        return
    widths = dict(zip((c.header for c in columns), natural, strict=True))
    for name in table.shrink_order:
        if excess <= 0:
            break
        floor = _PROSE_FLOOR if name in table.prose else _FLOOR
        cut = min(excess, max(0, widths[name] - floor))
        widths[name] -= cut
        excess -= cut
    for column in columns:
        column.max_width = widths[column.header]


def _print_table(console: Any, table: Any) -> None:
    if console.width < WIDE_COLUMNS:
        _fit(table, console.width)
    console.print(table)


def _when(value: datetime | None) -> str:
    # Output is copied and compared: UTC (display's zone policy), "-" in a table cell when there is none.
    return display.utc_stamp(value, missing="-")


def _status(value: object) -> Text:
    return _text(getattr(value, "value", value), display.status_style(value))


def _print_json(data: Any) -> None:
    # ensure_ascii (the default): a hostile name can't smuggle terminal controls through `jq`-less viewing.
    print(json.dumps(data, indent=2, sort_keys=False))


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True)


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


def _done(args: argparse.Namespace, result: Any, line: str) -> int:
    """A change's outcome: the result object with ``--json``, else one line for people."""
    if args.json:
        _print_json(result if isinstance(result, (dict, list)) else _dump(result))
    else:
        _out(line)
    return 0


async def _collect(fetch: Callable[[int, int], Awaitable[Any]], limit: int) -> tuple[list[Any], int]:
    """Up to ``limit`` items, page by page (the API serves at most 100 a request)."""
    items: list[Any] = []
    total = 0
    while len(items) < limit:
        page = await fetch(len(items), min(models.PAGE_MAX, limit - len(items)))
        total = page.totalCount
        items.extend(page.results)
        if not page.results or len(items) >= total:
            break
    return items, total


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}es" if word.endswith("sh") else f"{count} {word}s"


# ------------------------------------------------------------------ the twin


def _profile(args: argparse.Namespace) -> ConnectionProfile:
    return load_profile(args.profile, url=args.url, readonly=True if args.readonly else None)


def _run_twin(args: argparse.Namespace) -> int:
    from .client import ProtectClient

    profile = _profile(args)
    if getattr(args, "changing", False) and profile.readonly:
        raise ConfigError(f"profile {profile.name!r} is read-only: nothing changed")

    async def run() -> int:
        async with ProtectClient(profile.url, profile.api_key, retries=2, timeout=profile.timeout) as client:
            code: int = await args.handler(client, args)
            return code

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
    table = _table(
        "Username",
        "Name",
        "Email",
        "State",
        "Push",
        "TOTP",
        "WebAuthn",
        "ID",
        shrink=("ID", "Name", "WebAuthn", "State", "TOTP", "Push", "Email", "Username"),
    )
    for u in users:
        e = u.mfaEnrollment
        state = _status(u.state)
        if u.account_locked:
            state.append(" locked", "red")
        totp = display.enrollment_text(e.totpStatus)
        if u.totpLock.locked:
            totp = _text("✗ locked", "red")
        table.add_row(
            _text(u.username),
            _text(display.user_name(u)),
            _text(u.email),
            state,
            display.enrollment_text(e.pushStatus),
            totp,
            display.enrollment_text(e.webAuthnStatus),
            _text(u.id, "dim"),
        )
    console = _console(args)
    _print_table(console, table)
    console.print(_text(f"{len(users)} of {total} users"))
    return 0


def _normalise_filter(value: str) -> str:
    # `state=ACTIVATED` is friendlier to type than `state:$eq:ACTIVATED` (no shell quoting of `$`).
    if ":$" not in value and "=" in value:
        field, _, rest = value.partition("=")
        return f"{field.strip()}:$eq:{rest.strip()}"
    return value


def _totp_words(user: Any) -> str:
    status: str = user.mfaEnrollment.totpStatus.value
    lock = user.totpLock
    if lock.locked:
        until = f" until {display.utc_minute(lock.lockedUntil)}" if lock.lockedUntil is not None else ""
        return f"{status} (locked{until}: {lock.failures} of {lock.maxFailures} wrong codes; `totp reset` unlocks)"
    if lock.failures:
        return f"{status} ({lock.failures} of {lock.maxFailures} wrong codes)"
    return status


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
    console = _console(args)
    e = user.mfaEnrollment
    facts = _table("Field", "Value", title=f"User {user.username}")
    rows: list[tuple[str, Any]] = [
        ("ID", user.id),
        ("Username", user.username),
        ("Name", display.user_name(user)),
        ("Email", user.email),
        ("State", user.state.value + (" (locked)" if user.account_locked else "")),
        ("Created", _when(user.created)),
        ("MFA overall", e.overallStatus.value),
        ("Push", e.pushStatus.value),
        ("TOTP", _totp_words(user)),
        ("WebAuthn", e.webAuthnStatus.value),
    ]
    if user.mfa.exclusion:
        rows.append(("MFA grace until", _when(user.mfa.exclusionUntil)))
    if user.pushBlock is not None:
        rows.append(("Push blocked", f"until {_when(user.pushBlock.blockedUntil)} by {user.pushBlock.blockedBy}"))
    if user.requireUserVerification:
        rows.append(("Biometric", "required for this user's approvals"))
    for label, value in rows:
        styled = label in ("State", "Push", "WebAuthn", "MFA overall")
        facts.add_row(_text(label, "bold"), _status(value) if styled else _text(value))
    _print_table(console, facts)
    if devices:
        table = _table(
            "Device",
            "Make/model",
            "OS",
            "App",
            "Biometric",
            "State",
            "Enrolled",
            "Last used",
            "Diagnostics",
            shrink=("Diagnostics", "Last used", "Enrolled", "App", "OS", "Biometric", "Device"),
        )
        for d in devices:
            table.add_row(
                _text(d.name),
                _text(f"{d.device.make} {d.device.model}"),
                _text(f"{d.device.os} {d.device.osVersion}"),
                _text(d.device.appVersion),
                _text("on" if d.device.uvEnabled else "off"),
                _text(d.state),
                _text(_when(d.enrollmentDate)),
                _text(_when(d.lastUsedDate)),
                _text("opted out" if d.privacy.diagnosticsOptOut else "shared"),
            )
        _print_table(console, table)
    else:
        console.print(_text("No push device enrolled."))
    if attempts.results:
        _print_table(
            console, _attempts_table(attempts.results, title=f"Recent push attempts ({attempts.totalCount} in all)")
        )
    return 0


async def users_unlock(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    if not user.account_locked:
        return _done(args, user, f"User {user.username} is not locked: nothing to unlock.")
    _confirm(f"Unlock user {user.username} ({user.email})?", yes=args.yes, action="unlocking")
    after = await client.unlock_user(user.id)
    return _done(args, after, f"Unlocked user {after.username}.")


async def users_delete(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("not deleting without confirmation: stdin is not a terminal; pass --yes")
        sys.stderr.write(
            printable(
                f"Delete user {user.username} ({user.email}, id {user.id})? Their push device, enrollment codes and "
                "pending pushes go too; the audit and attempt history stay. This cannot be undone.\n"
                "Type the username to delete: "
            )
        )
        sys.stderr.flush()
        if sys.stdin.readline().strip() != user.username:
            raise Cancelled
    deleted = await client.delete_user(user.id)
    return _done(args, deleted, f"Deleted user {deleted.username} (id {deleted.id}).")


async def _user_and_devices(client: Any, args: argparse.Namespace) -> tuple[Any, list[Any]]:
    user = await client.find_user(args.user)
    return user, await client.push_endpoints(user.id)


def _no_device(args: argparse.Namespace, user: Any, verb: str) -> int:
    return _done(args, [], f"User {user.username} has no push device: nothing to {verb}.")


async def devices_unenroll(client: Any, args: argparse.Namespace) -> int:
    user, devices = await _user_and_devices(client, args)
    if not devices:
        return _no_device(args, user, "unenroll")
    removed = []
    lines = []
    for device in devices:
        what = f"device {device.name} ({device.device.make} {device.device.model})"
        _confirm(f"Unenroll {what} of user {user.username}?", yes=args.yes, action="unenrolling")
        removed.append(await client.unenroll_device(user.id, device.id))
        lines.append(f"Unenrolled {what} of user {user.username}.")
    return _done(args, [_dump(d) for d in removed], "\n".join(lines))


async def _devices_set_state(client: Any, args: argparse.Namespace, state: str) -> int:
    verb = "activate" if state == "active" else "deactivate"
    user, devices = await _user_and_devices(client, args)
    if not devices:
        return _no_device(args, user, verb)
    results = []
    lines = []
    for device in devices:
        what = f"device {device.name} ({device.device.make} {device.device.model}) of user {user.username}"
        if device.state == state:
            results.append(device)
            lines.append(f"The push {what} is already {state}: nothing to {verb}.")
            continue
        consequence = (
            "It can approve pushes again."
            if state == "active"
            else "It stops receiving and approving pushes until it is activated again."
        )
        _confirm(f"{verb.capitalize()} the push {what}? {consequence}", yes=args.yes, action=f"{verb[:-1]}ing")
        results.append(await client.update_push_endpoint(user.id, device.id, state=state))
        lines.append(f"{verb.capitalize()}d the push {what}.")
    return _done(args, [_dump(d) for d in results], "\n".join(lines))


async def devices_activate(client: Any, args: argparse.Namespace) -> int:
    return await _devices_set_state(client, args, "active")


async def devices_deactivate(client: Any, args: argparse.Namespace) -> int:
    return await _devices_set_state(client, args, "inactive")


def qr_lines(data: str, *, border: int = 2) -> list[str]:
    """``data`` as a QR code in half-block characters, two modules per character cell vertically.

    Light modules are drawn as blocks, so it reads correctly on the usual dark terminal (and white on
    black when colour is on), like the console's enrollment modal.
    """
    import segno

    qr = segno.make(data, error="l", micro=False)
    rows = [[not bool(dark) for dark in row] for row in qr.matrix_iter(scale=1, border=border)]
    if len(rows) % 2:
        rows.append([True] * len(rows[0]))  # pad with a light row
    blocks = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}
    return [
        "".join(blocks[(t, b)] for t, b in zip(top, bottom, strict=True))
        for top, bottom in zip(rows[0::2], rows[1::2], strict=True)
    ]


def _print_qr(data: str) -> None:
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for line in qr_lines(data):  # our own characters: printed whole, never cropped or wrapped
        print(f"\x1b[37;40m{line}\x1b[0m" if colour else line)


async def enroll(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    devices = await client.push_endpoints(user.id)
    active = [d for d in devices if d.state == "active"]
    warning = ""
    if active:
        warning = (
            f" Their device {active[0].name} is still active and keeps approving until the new one enrolls"
            f" (if it was lost: `protect-console devices deactivate {user.username}` first)."
        )
    _confirm(
        f"Create a push enrollment code for user {user.username}? Enrolling a new device replaces the current one."
        + warning,
        yes=args.yes,
        action="creating an enrollment code",
    )
    code = await client.create_enrollment(user.id)
    if args.json:
        _print_json(_dump(code))
        return 0
    _print_qr(code.uri)
    minutes = max(0, round((code.expiresAt - display.now()).total_seconds() / 60))
    _out(f"Enrollment code for user {user.username}: {code.code}")
    _out(
        f"Expires {_when(code.expiresAt)} (in about {minutes} min). Scan the QR code with the Protect app, "
        "or type the code in it."
    )
    _out(code.uri)
    return 0


async def mfa_reset(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    devices = await client.push_endpoints(user.id)
    e = user.mfaEnrollment
    has_totp = e.totpStatus != models.EnrollmentStatus.NOT_ENROLLED or user.totpLock.failures > 0
    has_push = bool(devices) or e.pushStatus != models.EnrollmentStatus.NOT_ENROLLED
    days = args.grace_days or 0
    removes = [f"push device {d.name} ({d.device.make} {d.device.model})" for d in devices]
    if has_push and not devices:
        removes.append(f"the pending push enrollment ({e.pushStatus.value})")
    if has_totp:
        removes.append("the TOTP secret")
    kept = ["WebAuthn"] if e.webAuthnStatus == models.EnrollmentStatus.ENROLLED else []
    if not removes and not days and not user.mfa.exclusion:
        return _done(args, user, f"User {user.username} has no push device, TOTP or grace period: nothing to reset.")
    if days:
        grace = f"with a {days}-day grace period to enroll again"
    elif user.mfa.exclusion:
        grace = f"and end the grace period (until {_when(user.mfa.exclusionUntil)}): no grace period"
    else:
        grace = "with no grace period (the user cannot pass MFA until they enroll again)"
    what = ", ".join(removes) if removes else "nothing enrolled"
    keeps = f"; keeps {', '.join(kept)}" if kept else ""
    _confirm(
        f"Reset all MFA of user {user.username}: removes {what}{keeps}; {grace}?", yes=args.yes, action="resetting MFA"
    )
    after = await client.reset_mfa(user.id, grace_days=days or None)
    until = f"; grace period until {_when(after.mfa.exclusionUntil)}" if after.mfa.exclusion else "; no grace period"
    removed = f": removed {', '.join(removes)}" if removes else ""
    kept_line = f"; kept {', '.join(kept)}" if kept else ""
    return _done(args, after, f"Reset MFA of user {after.username}{removed}{kept_line}{until}.")


async def totp_reset(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    status = user.mfaEnrollment.totpStatus
    if status == models.EnrollmentStatus.NOT_ENROLLED and not user.totpLock.failures:
        nothing = models.TotpResetResult(userId=user.id, totpStatus=status, changed=False)
        return _done(args, nothing, f"TOTP was not enrolled for {user.username}: nothing to reset.")
    lock = user.totpLock
    locked = f" (locked after {lock.failures} wrong codes; the reset unlocks it)" if lock.locked else ""
    _confirm(f"Reset the TOTP secret of user {user.username}{locked}?", yes=args.yes, action="resetting TOTP")
    result = await client.reset_totp(user.id)
    if not result.changed:
        return _done(args, result, f"TOTP was not enrolled for {user.username}: nothing to reset.")
    return _done(args, result, f"Reset TOTP of user {user.username}: TOTP is now {result.totpStatus.value}.")


async def totp_verify(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    lock = user.totpLock
    if user.mfaEnrollment.totpStatus != models.EnrollmentStatus.ENROLLED:
        raise _Failure(
            f"user {user.username} has no TOTP enrolled ({user.mfaEnrollment.totpStatus.value}): "
            "there is no code to check"
        )
    if lock.locked:
        raise _Failure(
            f"TOTP of user {user.username} is locked ({lock.failures} of {lock.maxFailures} wrong codes): every code "
            f"is refused until the lock-out ends or `protect-console totp reset {user.username}`; nothing was checked"
        )
    if lock.failures:
        _say(
            f"note: {user.username} has {lock.failures} of {lock.maxFailures} wrong codes in the last 15 minutes; "
            "a wrong code now counts toward the lock-out"
        )
    result = await client.verify_totp(user.id, args.code)
    if args.json:
        _print_json(_dump(result))
        return 0 if result.valid else 1
    if result.valid:
        _out(f"Code valid for user {user.username}.")
        return 0
    after = (await client.get_user(user.id)).totpLock
    count = f"{after.failures} of {after.maxFailures} wrong codes" + ("; TOTP is now locked" if after.locked else "")
    reason = f": {result.reason}" if result.reason else ""
    _out(f"Code NOT valid for user {user.username}{reason} ({count}).")
    return 1


async def attack_stop(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    pending = (await client.push_attempts(user_id=user.id, status=models.PushStatus.PENDING, limit=1)).totalCount
    steps = [f"refuse new pushes for {_plural(args.minutes, 'minute')}"]
    if not args.keep_pending:
        steps.insert(0, f"cancel {_plural(pending, 'pending push')}")
    if args.require_biometric:
        steps.append("require biometric approval for this user from now on")
    already = ""
    if user.pushBlock is not None:
        already = f" (already blocked until {_when(user.pushBlock.blockedUntil)}; this sets a new end)"
    _confirm(
        f"Stop the push attack on user {user.username}: {', '.join(steps)}{already}?",
        yes=args.yes,
        action="stopping the attack",
    )
    result = await client.block_push(
        user.id,
        minutes=args.minutes,
        cancel_pending=not args.keep_pending,
        require_user_verification=args.require_biometric,
    )
    parts = [
        f"new pushes refused until {_when(result.blockedUntil)}",
        f"{_plural(result.cancelled, 'pending push')} cancelled",
    ]
    if args.require_biometric:
        parts.append("biometric approval required from now on")
    return _done(
        args,
        result,
        f"Stopped the push attack on user {user.username}: {'; '.join(parts)}. "
        f"`protect-console attack lift {user.username}` lifts the block.",
    )


async def attack_lift(client: Any, args: argparse.Namespace) -> int:
    user = await client.find_user(args.user)
    block = user.pushBlock
    nothing = f"No push block in force for user {user.username}: nothing to lift."
    if block is None:
        return _done(args, models.PushBlockLifted(lifted=False), nothing)
    _confirm(
        f"Lift the push block on user {user.username} (until {_when(block.blockedUntil)}, by {block.blockedBy})? "
        "New pushes are accepted again.",
        yes=args.yes,
        action="lifting the block",
    )
    result = await client.lift_push_block(user.id)
    if not result.lifted:
        return _done(args, result, nothing)
    return _done(args, result, f"Lifted the push block on user {user.username}: new pushes are accepted again.")


# ------------------------------------------------------------------ settings


# Names, ranges, checks and meanings: models.SETTINGS, as the service and the console read them.
_SETTINGS_BY_NAME = {name.lower(): setting for setting in models.SETTINGS for name in (setting.key, *setting.aliases)}


_SETTING_NAMES = ", ".join(setting.key for setting in models.SETTINGS)


def find_setting(name: str) -> models.Setting | None:
    """The setting ``name`` names: its key (any case) or one of the CLI's first names for it."""
    return _SETTINGS_BY_NAME.get(name.strip().lower())


def _allowed(setting: models.Setting) -> str:
    return "on/off" if setting.range is None else f"{setting.range[0]}..{setting.range[1]}"


async def settings_get(client: Any, args: argparse.Namespace) -> int:
    settings, _etag = await client.get_settings()
    document = settings.model_dump(mode="json")
    if args.json:
        _print_json(document)
        return 0
    table = _table("Setting", "Value", "Allowed", "Meaning", prose=("Meaning",))
    for setting in models.SETTINGS:
        table.add_row(
            _text(setting.key, "bold"),
            _text(setting.show(setting.read(document), unit=False)),
            _text(_allowed(setting)),
            _text(setting.meaning),
        )
    _print_table(_console(args), table)
    return 0


async def settings_set(client: Any, args: argparse.Namespace) -> int:
    from .client import PreconditionFailed

    spec = find_setting(args.name)
    if spec is None:
        raise UsageError(f"unknown setting {args.name!r}; choose one of {_SETTING_NAMES}")
    new, problem = spec.check(args.value, args.name)
    if new is None:
        raise UsageError(problem)
    settings, etag = await client.get_settings()
    old = spec.read(settings)
    if old == new:
        return _done(
            args,
            settings.model_dump(mode="json"),
            f"{spec.key} is already {spec.show(new, unit=False)}: nothing to change.",
        )
    _confirm(
        f"Change {spec.key} from {spec.show(old, unit=False)} to {spec.show(new, unit=False)}?",
        yes=args.yes,
        action="changing settings",
    )
    try:
        updated, _ = await client.update_settings(spec.patch(new), etag)
    except PreconditionFailed:
        raise _Failure(
            "someone else changed the settings since they were read; nothing changed. "
            "Run `protect-console settings get` and try again"
        ) from None
    return _done(
        args,
        updated.model_dump(mode="json"),
        f"{spec.key}: {spec.show(old, unit=False)} -> {spec.show(spec.read(updated), unit=False)}",
    )


# ------------------------------------------------------- privacy, attempts


async def privacy(client: Any, args: argparse.Namespace) -> int:
    summary = await client.privacy_summary()
    opted_out = True if args.opted_out else None
    devices, total = await _collect(
        lambda skip, limit: client.privacy_devices(opted_out=opted_out, skip=skip, limit=limit), args.limit
    )
    if args.json:
        _print_json(
            {"summary": _dump(summary), "devices": {"totalCount": total, "results": [_dump(d) for d in devices]}}
        )
        return 0
    console = _console(args)
    share = f"{summary.optedOut / summary.devices:.0%}" if summary.devices else "0%"
    console.print(
        _text(
            f"{summary.devices} devices, {summary.optedOut} opted out of diagnostics ({share}), "
            f"{summary.optedIn} sharing."
        )
    )
    console.print(
        _text(
            "Collected: app and device diagnostics and usage data for troubleshooting. "
            "Not collected: user information. Opted-out devices' reports are counted and dropped.",
            "dim",
        )
    )
    table = _table(
        "User",
        "Email",
        "Device",
        "OS",
        "App",
        "Diagnostics",
        "Changed",
        shrink=("Changed", "App", "OS", "Device", "Email", "User"),
    )
    for d in devices:
        table.add_row(
            _text(d.user.username),
            _text(d.user.email),
            _text(f"{d.device.make} {d.device.model}"),
            _text(f"{d.device.os} {d.device.osVersion}"),
            _text(d.device.appVersion),
            _text("opted out", "yellow") if d.privacy.diagnosticsOptOut else _text("shared"),
            _text(_when(d.privacy.updatedAt)),
        )
    _print_table(console, table)
    console.print(_text(f"{len(devices)} of {total} {'opted-out ' if args.opted_out else ''}devices"))
    return 0


def _attempts_table(attempts: Sequence[Any], title: str | None = None) -> Table:
    table = _table(
        "Created",
        "User",
        "Resource",
        "Status",
        "App",
        "Location",
        "IP",
        title=title,
        shrink=("Location", "App", "Created", "Resource", "IP", "Status", "User"),
    )
    for a in attempts:
        table.add_row(
            _text(_when(a.createdAt)),
            _text(a.username or a.userId),
            _text(a.resource),
            display.push_status_text(a.status, fraud=a.fraud),
            _text(a.context.app or ""),
            _text(a.context.location or ""),
            _text(a.context.ip or ""),
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
    console = _console(args)
    _print_table(console, _attempts_table(items))
    console.print(_text(f"{len(items)} of {total} push attempts, newest first"))
    return 0


# ------------------------------------------------------------ local commands


def cmd_tui(args: argparse.Namespace) -> int:
    profile = _profile(args)
    from .tui.startup import console_memory, first_requests, next_requests

    with console_memory():  # no cyclic GC while the UI loads (tui/startup.py says why)
        from .client import WarmStart

        # The first screen's requests go out now and are answered while Textual loads (~0.3 s).
        warm = WarmStart.begin(profile.url, profile.api_key, first_requests(), follow=next_requests)
        from .tui.app import ProtectConsoleApp  # Textual only when the console runs

        app = ProtectConsoleApp(profile, open_user=args.user, warm=warm)
        app.run()
    return app.return_code or 0


def _db_path(args: argparse.Namespace) -> DbTarget:
    """``--db``, else ``PROTECT_DB``, else protect.db in the XDG data dir: a SQLite path or a PostgreSQL URL.

    A value that is neither is a usage error (exit 2) before anything is created. ``str()`` of
    the result never shows a password; ``.value`` is the whole URL for child processes."""
    from .server.store import BadDatabaseUrl, parse_db

    value = args.db if getattr(args, "db", None) is not None else os.environ.get("PROTECT_DB") or None
    if value is None:
        from .server.paths import default_db_path

        value = default_db_path()
    try:
        return parse_db(value)
    except BadDatabaseUrl as exc:
        raise UsageError(str(exc)) from None


def _open_store(db: Any, *, must_exist: bool = False) -> Store:
    """The store at ``db`` (a DbTarget), or a one-line reason it cannot be used."""
    from .server.store import StoreError, open_store

    if must_exist and db.is_sqlite and not db.path.is_file():
        raise _Failure(f"no database at {db} (pass --db FILE or URL, the one `protect-console serve --db` uses)")
    try:
        return open_store(db)
    except StoreError as exc:
        if exc.exit_code == 2:
            raise UsageError(str(exc)) from None
        raise _Failure(str(exc)) from None
    except OSError as exc:
        raise _Failure(f"cannot open database {db}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's errors: not a database, locked, read-only...
        reason = getattr(exc, "orig", None) or exc
        raise _Failure(f"cannot open database {db}: {reason}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.app import create_app
    from .server.limits import Limits
    from .server.runner import serve_app, serve_workers
    from .server.services.keys import ensure_bootstrap_key

    db = _db_path(args)
    _use_secret_key_file(args)
    access_log_file = _access_log_file(args.access_log)
    store = _open_store(db)
    key = ensure_bootstrap_key(store)
    if key:
        # stdout holds the key alone (KEY=$(protect-console serve … | head -1)); the logs go to stderr.
        _say("Created the first admin API key (on stdout). It is shown once and cannot be shown again; store it now.")
        print(key, flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _say(f"warning: serving plain HTTP on {args.host}; put TLS in front before using it over a network")
    workers = f", {args.workers} worker processes" if args.workers > 1 else ""
    _say(f"Protect service on http://{args.host}:{args.port} (database {db}{workers})")
    access_log = not args.no_access_log
    if args.workers > 1:
        store.dispose()  # each worker opens its own connections
        serve_workers(
            db.value,
            host=args.host,
            port=args.port,
            workers=args.workers,
            metrics_require_key=args.metrics_key,
            limits=Limits.from_env(),
            access_log=access_log,
            access_log_file=access_log_file,
        )
        return 0
    try:
        serve_app(
            create_app(store, metrics_require_key=args.metrics_key, limits=Limits.from_env()),
            host=args.host,
            port=args.port,
            access_log=access_log,
            access_log_file=access_log_file,
        )
    finally:
        store.dispose()
    return 0


def _access_log_file(path: str | None) -> str | None:
    """``serve --access-log FILE`` as an absolute path, checked now: appending to it must work."""
    if path is None:
        return None
    resolved = Path(path).expanduser().resolve()
    try:
        with open(resolved, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise UsageError(f"--access-log {path}: {exc.strerror or exc}") from None
    return str(resolved)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from .server.clock import Clock
    from .server.services.keys import issue_key, parse_expiry

    db = _db_path(args)
    store = _open_store(db)
    try:
        try:
            expires = None if args.expires is None else parse_expiry(args.expires, Clock().now())
            key, info = issue_key(store, args.name, args.role, expires_at=expires, resources=args.resource)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    finally:
        store.dispose()
    if args.json:
        _print_json({**_key_dict(info), "key": key, "db": str(db)})
        return 0
    limits = "".join(
        [
            f", expires {_when(info.expires_at)}" if info.expires_at else "",
            f", only for {', '.join(info.resources)}" if info.resources else "",
        ]
    )
    print(printable(f"Created {args.role} key {args.name.strip()!r} in {db}{limits}. It is shown once; store it now:"))
    print(key)
    return 0


def _key_dict(key: Any) -> dict[str, Any]:
    from .server.clock import Clock

    iso = display.iso_z  # the store's naive times are UTC
    return {
        "id": key.id,
        "prefix": key.prefix,
        "name": key.name,
        "role": key.role,
        "status": key.status(Clock().now()).value,
        "created": iso(key.created_at),
        "lastUsed": iso(key.last_used_at),
        "expires": iso(key.expires_at),
        "revoked": iso(key.revoked_at),
        "resources": list(key.resources) if key.resources is not None else None,
    }


def cmd_keys_list(args: argparse.Namespace) -> int:
    from .server.clock import Clock
    from .server.services.keys import list_keys

    db = _db_path(args)
    store = _open_store(db, must_exist=True)
    try:
        keys = list_keys(store)
    finally:
        store.dispose()
    if args.json:
        _print_json([_key_dict(k) for k in keys])
        return 0
    now = Clock().now()
    table = _table(
        "ID",
        "Prefix",
        "Name",
        "Role",
        "Status",
        "Created",
        "Last used",
        "Expires",
        "Resources",
        shrink=("Resources", "Created", "ID", "Expires", "Last used", "Name"),
    )
    for k in keys:
        status = k.status(now)
        when_ended = {models.ApiKeyStatus.REVOKED: k.revoked_at, models.ApiKeyStatus.EXPIRED: k.expires_at}.get(status)
        table.add_row(
            _text(k.id, "dim"),
            _text(k.prefix),
            _text(k.name),
            _text(k.role),
            _text(f"{status.value} {_when(when_ended)}" if when_ended else status.value, "red" if when_ended else ""),
            _text(_when(k.created_at)),
            _text(_when(k.last_used_at)),
            _text(_when(k.expires_at)),
            _text(", ".join(k.resources) if k.resources is not None else "any"),
        )
    console = _console(args)
    _print_table(console, table)
    active = sum(k.status(now) == models.ApiKeyStatus.ACTIVE for k in keys)
    console.print(_text(f"{_plural(len(keys), 'key')} in {db}, {active} active"))
    return 0


def _one_live_key(store: Any, ref: str, db: Any) -> tuple[Any, Any]:
    """The key ``ref`` names (id, prefix or name) that is not revoked: (it, None), or (None, the revoked match)."""
    from .server.services.keys import find_keys

    matches = find_keys(store, ref)
    active = [k for k in matches if not k.revoked]
    if not matches:
        raise _Failure(f"no API key with id, prefix or name {ref!r} in {db}")
    if not active:
        return None, matches[0]
    if len(active) > 1:
        ids = ", ".join(f"{k.id} ({k.prefix}, {k.role})" for k in active)
        raise UsageError(f"{len(active)} active keys match {ref!r}: {ids}; give the id")
    return active[0], None


def _last_admin_warning(store: Any, key: Any) -> str:
    from .server.services.keys import list_keys

    last_admin = (
        key.role == models.Role.ADMIN
        and sum(not k.revoked and k.role == models.Role.ADMIN for k in list_keys(store)) == 1
    )
    return (
        " It is the last active admin key: nobody can change settings until `keys create` makes another."
        if last_admin
        else ""
    )


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from .server.services.keys import revoke_key

    db = _db_path(args)
    store = _open_store(db, must_exist=True)
    try:
        key, gone = _one_live_key(store, args.key, db)
        if key is None:
            return _done(
                args, _key_dict(gone), f"Key {gone.name!r} ({gone.prefix}) is already revoked: nothing to revoke."
            )
        _confirm(
            f"Revoke {key.role} key {key.name!r} ({key.prefix}, created {_when(key.created_at)})? Everything using it "
            f"is refused from now on.{_last_admin_warning(store, key)}",
            yes=args.yes,
            action="revoking",
        )
        revoked = revoke_key(store, key.id)
    finally:
        store.dispose()
    if revoked is None:  # revoked by someone else between the lookup and now
        return _done(args, _key_dict(key), f"Key {key.name!r} ({key.prefix}) is already revoked: nothing to revoke.")
    return _done(args, _key_dict(revoked), f"Revoked {revoked.role} key {revoked.name!r} ({revoked.prefix}).")


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from .server.services.keys import KeyNotUsable, rotate_key

    db = _db_path(args)
    store = _open_store(db, must_exist=True)
    grace = args.grace_minutes * 60
    try:
        key, gone = _one_live_key(store, args.key, db)
        if key is None:
            raise _Failure(f"key {gone.name!r} ({gone.prefix}) is revoked: `keys create` makes a new one")
        then = (
            f"keeps working for {_plural(args.grace_minutes, 'minute')}, then expires"
            if grace
            else "is refused from now on"
        )
        _confirm(
            f"Rotate {key.role} key {key.name!r} ({key.prefix})? A new key is printed once; the old one {then}.",
            yes=args.yes,
            action="rotating",
        )
        try:
            rotated = rotate_key(store, key.id, grace_seconds=grace)
        except KeyNotUsable as exc:
            raise _Failure(str(exc)) from None
    finally:
        store.dispose()
    if rotated is None:
        raise _Failure(f"no API key with id {key.id!r} in {db}")
    secret, new, old = rotated
    if args.json:
        _print_json({**_key_dict(new), "key": secret, "replaced": _key_dict(old), "db": str(db)})
        return 0
    ends = f"expires {_when(old.expires_at)}" if old.revoked_at is None else "is revoked"
    print(
        printable(
            f"Rotated {new.role} key {new.name!r}: the old one ({old.prefix}) {ends}. "
            "The new key is shown once; store it now:"
        )
    )
    print(secret)
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from .server.services.audit import verify_chain

    db = _db_path(args)
    store = _open_store(db, must_exist=True)
    try:
        with store.read() as conn:
            report = verify_chain(conn)
    finally:
        store.dispose()
    if args.json:
        _print_json(
            {
                "ok": report.ok,
                "checked": report.checked,
                "lastId": report.last_id,
                "lastHash": report.last_hash,
                "brokenId": report.broken_id,
                "problem": report.problem,
            }
        )
    elif report.ok:
        _out(
            f"Audit chain intact: {_plural(report.checked, 'event')} checked in {db}"
            + (f", the last is {report.last_id} ({report.last_hash})." if report.last_id else ".")
        )
    else:
        where = f"event {report.broken_id}" if report.broken_id is not None else "the chain"
        print(
            printable(
                f"Audit chain broken at {where}: {report.problem} "
                f"({_plural(report.checked, 'event')} before it verified)"
            ),
            file=sys.stderr,
        )
    return 0 if report.ok else 1


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
    if args.json:
        _print_json({"db": str(db), "users": args.users, "seconds": round(elapsed, 2), "report": report or {}})
        return 0
    print(f"Seeded {args.users:,} users into {db} in {elapsed:.1f} s")
    for key, value in (report or {}).items():
        print(f"  {printable(key)}: {printable(value)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    db = _db_path(args) if args.db or os.environ.get("PROTECT_DB") else None
    if db is not None:
        _open_store(db).dispose()  # a bad path or URL, or a database behind the code: one line, before any set-up
    return run_demo(
        db=(db.path if db.path is not None else db) if db is not None else None,
        users=args.users,
        role=args.role,
        port=args.port,
    )


# ------------------------------------------------------------------ secrets at rest (TOTP secrets' keys)


def _use_secret_key_file(args: argparse.Namespace) -> None:
    """``serve --secret-key-file``: through PROTECT_SECRET_KEY_FILE, so that its worker processes use it too."""
    from .server import secretbox

    if not getattr(args, "secret_key_file", None):
        return
    if os.environ.get(secretbox.KEY_ENV, "").strip():
        raise UsageError(f"--secret-key-file and {secretbox.KEY_ENV} both give the secret key: use one")
    os.environ[secretbox.KEY_FILE_ENV] = str(Path(args.secret_key_file).expanduser().resolve())


def _secrets_store(args: argparse.Namespace) -> Store:
    return _open_store(_db_path(args), must_exist=True)


def _secret_key_failures(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A key that goes missing mid-way (a secret under a key the source lacks): one line, not a traceback."""

    def wrapped(args: argparse.Namespace) -> int:
        from .server.secretbox import SecretKeyError

        try:
            return run(args)
        except SecretKeyError as exc:
            raise _Failure(str(exc)) from None

    return wrapped


def cmd_secrets_status(args: argparse.Namespace) -> int:
    from .server import secretbox

    store = _secrets_store(args)
    try:
        report = secretbox.status(store)
    finally:
        store.dispose()
    if args.json:
        _print_json(report)
        return 0
    _out(f"Keys from {report['source']}:")
    for key in report["keys"]:
        role = "current" if key["current"] else ("not used yet" if key.get("unused") else "previous")
        missing = "" if key["inSource"] else " (NOT in the key source)"
        _out(f"  {key['id']}  {role:<12} {_plural(key['secrets'], 'secret')}{missing}")
    if report["plainText"]:
        _out(f"{_plural(report['plainText'], 'secret')} in plain text: never used; reset those users' TOTP")
    if report["unknownKey"]:
        _out(f"{_plural(report['unknownKey'], 'secret')} under keys this database does not list")
    return 0


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    from .server import secretbox
    from .server.clock import Clock

    store = _secrets_store(args)
    if args.prepare:
        try:
            try:
                kid = secretbox.prepare(store)
            except ValueError as exc:
                raise _Failure(str(exc)) from None
            source = str(secretbox.box_of(store).source)
        finally:
            store.dispose()
        return _done(
            args,
            {"keyId": kid, "source": source, "prepared": True},
            f"Added key {kid} to {source}, not used yet: copy it to every host serving this database, then "
            f"run `protect-console secrets rotate` (without --prepare).",
        )
    try:
        done = secretbox.rotate(store, Clock().now())
        source = str(secretbox.box_of(store).source)
    finally:
        store.dispose()
    if args.json:
        _print_json(
            {
                "keyId": done.key_id,
                "generated": done.generated,
                "reencrypted": done.reencrypted,
                "unreadable": done.unreadable,
                "previous": list(done.previous),
                "source": source,
            }
        )
        return 0
    made = f"Generated key {done.key_id} in {source}" if done.generated else f"Key {done.key_id} from {source}"
    _out(f"{made}; it is now current: new TOTP secrets are encrypted under it.")
    _out(f"Re-encrypted {_plural(done.reencrypted, 'secret')} under {done.key_id}.")
    if done.unreadable:
        _out(
            f"{_plural(done.unreadable, 'secret')} could not be opened (plain text or altered) and were left: "
            f"reset those users' TOTP (`secrets status` counts them)."
        )
    for kid in done.previous:
        _out(
            f"Key {kid} is no longer needed by this database: `protect-console secrets retire {kid}` removes it "
            f"(keep a copy while backups made before now may be restored)."
        )
    return 0


def cmd_secrets_retire(args: argparse.Namespace) -> int:
    from .server import secretbox
    from .server.clock import Clock

    store = _secrets_store(args)
    try:
        try:
            secretbox.retire(store, args.key_id, Clock().now())
        except ValueError as exc:
            raise _Failure(str(exc)) from None
        env = secretbox.box_of(store).source.is_env
    finally:
        store.dispose()
    after = f"; remove it from {secretbox.KEY_ENV} too" if env else " and from the key file"
    return _done(args, {"retired": args.key_id}, f"Retired key {args.key_id}: removed from the database's keys{after}.")


def _secrets_parser(sub: Any) -> None:
    secrets = sub.add_parser("secrets", help="the keys TOTP secrets are encrypted under (local database)")
    secrets_sub = secrets.add_subparsers(dest="secrets_command", metavar="ACTION", required=True)
    status = secrets_sub.add_parser("status", help="key source, key ids and how many secrets each holds")
    rotate = secrets_sub.add_parser(
        "rotate", help="make a new key current and re-encrypt every secret under it (services keep running)"
    )
    rotate.add_argument(
        "--prepare",
        action="store_true",
        help="only add a new key to the key file (to copy to other hosts first); the next rotate uses it",
    )
    retire = secrets_sub.add_parser("retire", help="forget a previous key once no secret is under it")
    retire.add_argument("key_id", metavar="KEY_ID", help="the key id (`secrets status` lists them)")
    for parser, run in ((status, cmd_secrets_status), (rotate, cmd_secrets_rotate), (retire, cmd_secrets_retire)):
        _db_flag(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(run=_secret_key_failures(run))


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from .server.store import StoreError, upgrade_database

    db = _db_path(args)
    try:
        before, after = upgrade_database(db)
    except StoreError as exc:
        raise (UsageError if exc.exit_code == 2 else _Failure)(str(exc)) from None
    except OSError as exc:
        raise _Failure(f"cannot open database {db}: {exc.strerror or exc}") from None
    if args.json:
        _print_json(
            {
                "db": str(db),
                "from": before.revision,
                "to": after.revision,
                "head": after.head,
                "changed": before.revision != after.revision or not before.recorded,
            }
        )
        return 0
    if before.current:
        print(f"{db} is at schema {after.revision} (the latest): nothing to do.")
    elif before.empty:
        print(f"Created the schema (revision {after.revision}) in {db}.")
    elif before.revision == after.revision:
        print(f"Recorded {db} (made before migrations) as schema {after.revision}, the latest: no change to its data.")
    else:
        made = " (made before migrations)" if not before.recorded else ""
        print(f"Upgraded {db}{made} from schema {before.revision} to {after.revision}.")
    return 0


def cmd_db_gather_counts(args: argparse.Namespace) -> int:
    from .server.services.users import gather_counts

    db = _db_path(args)
    store = _open_store(db, must_exist=True)
    started = time.monotonic()
    try:
        stored = gather_counts(store, pause=0)
    finally:
        store.dispose()
    seconds = time.monotonic() - started
    if args.json:
        _print_json(
            {"db": str(db), "gathered": stored is not None, "stored": stored or 0, "seconds": round(seconds, 1)}
        )
    elif stored is None:
        print(
            f"{db}: nothing to do (the counts are gathered already, a serving process is gathering them, "
            "or too few users match any search for its count to be kept)."
        )
    else:
        print(f"Stored the counts of {stored:,} common searches in {seconds:.1f} s.")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from .server.store import StoreError, database_state

    db = _db_path(args)
    if db.path is not None and not db.path.is_file():
        raise _Failure(f"no database at {db} (pass --db FILE or URL, the one `protect-console serve --db` uses)")
    try:
        state = database_state(db)
    except StoreError as exc:
        raise (UsageError if exc.exit_code == 2 else _Failure)(str(exc)) from None
    if args.json:
        _print_json(
            {
                "db": str(db),
                "revision": state.revision,
                "head": state.head,
                "upToDate": state.current,
                "recorded": state.recorded,
            }
        )
        return 0
    if state.empty:
        print(f"{db}: empty (no schema yet; `protect-console db upgrade` or `serve` creates it)")
    elif state.current:
        print(f"{db}: schema {state.revision} (the latest)")
    elif not state.known:
        print(f"{db}: schema {state.revision}, unknown to this version (made by a newer release?)")
    else:
        made = ", made before migrations" if not state.recorded else ""
        print(f"{db}: schema {state.revision}{made}; this version needs {state.head}: run `protect-console db upgrade`")
    return 0


# ------------------------------------------------------------------ parsing


_CONNECTION_TITLE = "connection (API keys come from the config file or PROTECT_CONSOLE_API_KEY)"


def _connection_flags(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--profile``/``--url``/``--readonly``, before or after the subcommand.

    On subcommands their default is SUPPRESS, so a value given before the subcommand is not
    overwritten by the subcommand's default.
    """
    default: Any = None if top else argparse.SUPPRESS
    group = parser.add_argument_group(_CONNECTION_TITLE)
    group.add_argument("--profile", default=default, help="profile name in config.toml (default: default_profile)")
    group.add_argument("--url", default=default, help="backend URL, overriding the profile and PROTECT_CONSOLE_URL")
    group.add_argument(
        "--readonly",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="refuse every change, whatever the key allows",
    )


def _twin(
    sub: Any,
    name: str,
    handler: Callable[..., Awaitable[int]],
    help: str,
    *,
    changing: bool = False,
    tables: bool = False,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    _connection_flags(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the API's JSON (for changes: the result object) instead of text"
    )
    if tables:
        parser.add_argument("--wide", action="store_true", help="show whole values (tables as wide as they need)")
    if changing:
        parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(run=_run_twin, handler=handler, changing=changing)
    return parser


def _values(enum: type[StrEnum]) -> list[str]:
    # The enum is the list; its plain values, so that argparse's usage and errors read `admin`, not `Role.ADMIN`.
    return [member.value for member in enum]


def _user_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", metavar="USER", help="email, username or id")


DB_HELP = (
    "SQLite file or postgresql://user:password@host:port/dbname (also ?host=/socket/dir); "
    "default: $PROTECT_DB, else protect.db in the XDG data dir"
)


def _db_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH|URL", help=DB_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protect-console",
        description="Keyboard-driven admin console for Protect push and TOTP MFA, its service, and a scriptable CLI.",
        epilog="Without a command, opens the console (same as `protect-console tui`).",
    )
    _connection_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    tui = sub.add_parser("tui", help="open the full-screen console (default)")
    _connection_flags(tui)
    tui.add_argument("--user", metavar="EMAIL|USERNAME|ID", help="open this user's detail straight away")
    tui.set_defaults(run=cmd_tui)

    serve = sub.add_parser("serve", help="run the Protect service")
    _db_flag(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="port (default 8080)")
    serve.add_argument(
        "--workers",
        type=_int_in(1, 64),
        default=1,
        metavar="N",
        help="worker processes sharing the port and the database (default 1)",
    )
    serve.add_argument("--metrics-key", action="store_true", help="require an API key (any valid one) for GET /metrics")
    serve.add_argument(
        "--secret-key-file",
        metavar="PATH",
        help="key file for TOTP secrets at rest (default: $PROTECT_SECRET_KEY_FILE, else <db>.key "
        "beside a SQLite file, or secret.key in the XDG data dir for PostgreSQL)",
    )
    access = serve.add_mutually_exclusive_group()
    access.add_argument(
        "--access-log",
        metavar="FILE",
        help="append the access log (one line per request, no query values) to FILE instead of stderr",
    )
    access.add_argument("--no-access-log", action="store_true", help="write no access log")
    serve.set_defaults(run=cmd_serve)

    keys = sub.add_parser("keys", help="manage API keys (local database, no API key needed)")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = keys_sub.add_parser("create", help="create an API key; it is printed once, alone on the last line")
    create.add_argument("--name", required=True, help="who or what uses the key (shown in the audit log)")
    create.add_argument("--role", required=True, choices=_values(models.Role))
    create.add_argument(
        "--expires",
        metavar="WHEN",
        help="the key stops working after this: 90d, 12h, 30m, 2w, or an ISO date (UTC); default never",
    )
    create.add_argument(
        "--resource",
        action="append",
        metavar="NAME",
        help="service keys: may push only for this resource (repeat for several); default any",
    )
    _db_flag(create)
    create.add_argument("--json", action="store_true", help="print name, role, prefix and the key as JSON")
    create.set_defaults(run=cmd_keys_create)
    klist = keys_sub.add_parser(
        "list", help="the keys: id, prefix, name, role, status, created, last used, expiry, resources (never the key)"
    )
    _db_flag(klist)
    klist.add_argument("--json", action="store_true", help="print JSON instead of a table")
    klist.add_argument("--wide", action="store_true", help="show whole values")
    klist.set_defaults(run=cmd_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key: everything using it is refused from then on")
    revoke.add_argument("key", metavar="ID|PREFIX|NAME", help="the key's id, its prefix (pc_xxxxx) or its name")
    _db_flag(revoke)
    revoke.add_argument("--json", action="store_true", help="print the revoked key (never the key itself) as JSON")
    revoke.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    revoke.set_defaults(run=cmd_keys_revoke)
    rotate = keys_sub.add_parser(
        "rotate", help="replace a key: a new one (same name, role, resources) printed once, the old one revoked"
    )
    rotate.add_argument("key", metavar="ID|PREFIX|NAME", help="the key's id, its prefix (pc_xxxxx) or its name")
    rotate.add_argument(
        "--grace-minutes",
        type=_int_in(0, 30 * 24 * 60),
        default=0,
        metavar="N",
        help="the old key keeps working N minutes, then expires (default 0: revoked at once)",
    )
    _db_flag(rotate)
    rotate.add_argument("--json", action="store_true", help="print the new key and the old one's record as JSON")
    rotate.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rotate.set_defaults(run=cmd_keys_rotate)

    auditp = sub.add_parser("audit", help="the audit trail on the local database")
    audit_sub = auditp.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser(
        "verify", help="check the audit trail's hash chain; names the first broken event (exit 0 intact, 1 broken)"
    )
    _db_flag(verify)
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(run=cmd_audit_verify)

    seed = sub.add_parser("seed", help="write a synthetic directory into the database")
    seed.add_argument("--users", type=_positive_int, required=True, metavar="N")
    _db_flag(seed)
    seed.add_argument("--seed", type=int, default=1, metavar="INT", help="random seed (default 1)")
    seed.add_argument("--json", action="store_true", help="print the seed report as JSON")
    seed.set_defaults(run=cmd_seed)

    demo = sub.add_parser("demo", help="run the service with synthetic users and live activity, and open the console")
    demo.add_argument(
        "--db",
        metavar="PATH|URL",
        help="SQLite file or postgresql:// URL to use (default: $PROTECT_DB, "
        "else a fresh SQLite file in a temporary directory)",
    )
    demo.add_argument("--users", type=_positive_int, default=5000, metavar="N", help="users to seed (default 5000)")
    demo.add_argument(
        "--role",
        choices=[r for r in _values(models.Role) if r != models.Role.SERVICE],
        default=models.Role.ADMIN.value,
        help="role of the console's key (default admin)",
    )
    demo.add_argument("--port", type=_port, default=0, help="port for the service (default: any free port)")
    demo.set_defaults(run=cmd_demo)

    _secrets_parser(sub)

    dbp = sub.add_parser("db", help="the service's database schema (migrations)")
    db_sub = dbp.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    dbup = db_sub.add_parser("upgrade", help="bring the database to this version's schema (safe to run again)")
    _db_flag(dbup)
    dbup.add_argument("--json", action="store_true", help="print the revisions before and after as JSON")
    dbup.set_defaults(run=cmd_db_upgrade)
    dbcur = db_sub.add_parser("current", help="print the database's schema revision and whether it is the latest")
    _db_flag(dbcur)
    dbcur.add_argument("--json", action="store_true", help="print JSON")
    dbcur.set_defaults(run=cmd_db_current)
    gather = db_sub.add_parser(
        "gather-counts",
        help="count ahead the searches many users match, so their first search is fast "
        "(what `serve` does in the background after a bulk load; safe to run again)",
    )
    _db_flag(gather)
    gather.add_argument("--json", action="store_true", help="print JSON")
    gather.set_defaults(run=cmd_db_gather_counts)

    users = sub.add_parser("users", help="list, show, unlock and delete users")
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    ls = _twin(users_sub, "list", users_list, "list users", tables=True)
    ls.add_argument("--search", metavar="S", help="case-insensitive search over username, email and names")
    ls.add_argument(
        "--filter",
        metavar="F",
        action="append",
        default=[],
        help="field:$op:value or field=value, repeatable (ANDed), e.g. mfaEnrollment.pushStatus=ENROLLED",
    )
    ls.add_argument("--sort", metavar="FIELDS", help="e.g. 'username', '-created' or 'lastname'")
    ls.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="how many users (default 20)")
    show = _twin(
        users_sub, "show", users_show, "show one user, their push device and recent push attempts", tables=True
    )
    _user_arg(show)
    show.add_argument("--attempts", type=_positive_int, default=10, metavar="N", help="recent attempts to show")
    _user_arg(_twin(users_sub, "unlock", users_unlock, "unlock a locked account (admin)", changing=True))
    _user_arg(
        _twin(
            users_sub,
            "delete",
            users_delete,
            "delete a user, their device, enrollment codes and pending pushes (admin); asks to type the "
            "username unless --yes",
            changing=True,
        )
    )

    devices = sub.add_parser("devices", help="push devices")
    devices_sub = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    _user_arg(_twin(devices_sub, "unenroll", devices_unenroll, "unenroll a user's push device", changing=True))
    _user_arg(
        _twin(
            devices_sub,
            "deactivate",
            devices_deactivate,
            "deactivate a user's push device: it stops approving pushes (admin)",
            changing=True,
        )
    )
    _user_arg(
        _twin(
            devices_sub, "activate", devices_activate, "activate a deactivated push device again (admin)", changing=True
        )
    )

    _user_arg(
        _twin(
            sub,
            "enroll",
            enroll,
            "create a push enrollment code: prints the code, its expiry and a QR code",
            changing=True,
        )
    )

    mfa = sub.add_parser("mfa", help="multi-factor enrollment")
    mfa_sub = mfa.add_subparsers(dest="mfa_command", metavar="ACTION", required=True)
    reset = _twin(
        mfa_sub, "reset", mfa_reset, "reset all of a user's MFA (TOTP and push device; WebAuthn is kept)", changing=True
    )
    _user_arg(reset)
    reset.add_argument(
        "--grace-days",
        type=_int_in(0, models.GRACE_DAYS_MAX, " (0 = no grace period)"),
        default=0,
        metavar="N",
        help=f"days (0..{models.GRACE_DAYS_MAX}) the user may log in without MFA while "
        "enrolling again; 0, the default, means none",
    )

    totp = sub.add_parser("totp", help="TOTP verification codes")
    totp_sub = totp.add_subparsers(dest="totp_command", metavar="ACTION", required=True)
    _user_arg(_twin(totp_sub, "reset", totp_reset, "reset a user's TOTP secret (also lifts a lock)", changing=True))
    verify = _twin(
        totp_sub,
        "verify",
        totp_verify,
        "check a caller's 6-digit code (exit 0 valid, 1 not valid; a wrong code counts toward the lock-out)",
    )
    verify.set_defaults(changing=True)  # it counts toward the lock-out: a read-only profile refuses it
    _user_arg(verify)
    verify.add_argument("code", metavar="CODE", type=_totp_code, help="the 6 digits the caller reads out")

    attack = sub.add_parser("attack", help="stop a push-bombing attack on a user, or lift the block")
    attack_sub = attack.add_subparsers(dest="attack_command", metavar="ACTION", required=True)
    stop = _twin(
        attack_sub,
        "stop",
        attack_stop,
        "cancel the user's pending pushes and refuse new ones for a while",
        changing=True,
    )
    _user_arg(stop)
    low, high = models.BLOCK_MINUTES
    stop.add_argument(
        "--minutes",
        type=_int_in(low, high),
        default=models.BLOCK_MINUTES_DEFAULT,
        metavar="N",
        help=f"how long new pushes are refused ({low}..{high}, default {models.BLOCK_MINUTES_DEFAULT})",
    )
    stop.add_argument(
        "--require-biometric",
        action="store_true",
        help="from now on, this user's approvals need biometric or passcode verification",
    )
    stop.add_argument("--keep-pending", action="store_true", help="do not cancel the pushes already pending")
    _user_arg(
        _twin(attack_sub, "lift", attack_lift, "lift the push block: new pushes are accepted again", changing=True)
    )

    settings = sub.add_parser("settings", help="Protect settings")
    settings_sub = settings.add_subparsers(dest="settings_command", metavar="ACTION", required=True)
    _twin(settings_sub, "get", settings_get, "show the settings, their allowed ranges and meaning", tables=True)
    sset = _twin(
        settings_sub, "set", settings_set, "change one setting (safe against concurrent changes)", changing=True
    )
    sset.add_argument("name", metavar="NAME", help=_SETTING_NAMES)
    sset.add_argument("value", metavar="VALUE", help="a whole number in range, or on/off")

    priv = _twin(sub, "privacy", privacy, "diagnostics opt-out summary and devices", tables=True)
    priv.add_argument("--opted-out", action="store_true", help="only devices that opted out")
    priv.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="how many devices (default 20)")

    att = _twin(sub, "attempts", attempts, "push attempts, newest first", tables=True)
    att.add_argument("--user", metavar="USER", help="only this user's attempts (email, username or id)")
    att.add_argument("--status", choices=_values(models.PushStatus))
    att.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="how many attempts (default 20)")

    return parser


_TOP_VALUE_FLAGS = ("--profile", "--url")


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()  # pragma: no cover


def _with_default_command(argv: list[str], commands: set[str] | None = None) -> list[str]:
    """`protect-console --profile prod` means `protect-console tui --profile prod`.

    Connection flags may come before a command (`--profile prod users list`), so the first word that
    is not such a flag or its value decides: a command stays as typed; options alone open the console.
    """
    commands = commands if commands is not None else _commands(build_parser())
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in ("-h", "--help"):
            return argv
        if token in _TOP_VALUE_FLAGS:
            i += 2
        elif token.startswith("-"):
            i += 1
        else:
            break
    if i < len(argv) and argv[i] in commands:
        return argv
    if not argv or argv[0].startswith("-"):
        return ["tui", *argv]
    return argv


def _first_known(group: BaseExceptionGroup) -> BaseException:
    """The first error in ``group`` that :func:`main` explains, else the group itself."""
    from .client import ApiError

    known = (ApiError, ConfigError, _Failure, UsageError, Cancelled, KeyboardInterrupt)
    matched, _rest = group.split(lambda exc: isinstance(exc, known))
    first: BaseException | None = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if first is not None else group


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``protect-console``; returns the exit code."""
    from .client import ApiError

    parser = build_parser()
    args_list = _with_default_command(list(sys.argv[1:] if argv is None else argv), _commands(parser))
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse has printed usage or help
        return exc.code if isinstance(exc.code, int) else 2
    try:
        try:
            code: int = args.run(args)
            return code
        except BaseExceptionGroup as group:  # concurrent requests failing together: report the first reason
            raise _first_known(group) from group
    except UsageError as exc:
        _err(str(exc))
        return 2
    except Cancelled:
        _err("cancelled; nothing changed")
        return 1
    except ApiError as exc:
        _err(flag_message(str(exc)))
        return 1
    except (ConfigError, _Failure) as exc:
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
