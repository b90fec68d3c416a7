"""One user: profile, MFA, push device, recent pushes, hints, and the support-desk actions.

Keys typed ahead are never lost: an action key pressed before the user has loaded (``Enter U``
typed in one go from the Users list) waits for the data and then acts on this screen's user;
a key that cannot act says why in a toast (``action_unavailable``). The screen refreshes itself
every :attr:`UserDetailScreen.REFRESH_SECONDS` while it is the screen in view.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from datetime import datetime, timedelta
from typing import ClassVar, TypeVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import Static

from ... import display
from ...client import ApiError, NotFound
from ...display import (
    ago,
    clock_zone,
    enrollment_text,
    min_os_words,
    stamp,
    stamp_zone,
    user_label,
    user_name,
    window_words,
)
from ...models import (
    BOMBING_THRESHOLD,
    BOMBING_WINDOW,
    MIN_OS_MAJOR,
    EnrollmentStatus,
    Permission,
    PushAttempt,
    PushBlockResult,
    PushEndpoint,
    PushStats,
    PushStatus,
    SystemUser,
    TotpLockState,
)
from ...safe_text import printable
from ..modals.choice import ChoiceScreen
from ..modals.confirm import ConfirmScreen
from ..modals.enrollment import EnrollmentCodeScreen
from ..modals.prompt import grace_days_prompt, totp_code_prompt, type_to_confirm_prompt
from ..modals.stop_attack import StopAttackScreen
from ..widgets.attempts_table import AttemptsTable
from .base import ConsoleScreen, describe_action

T = TypeVar("T")

SHOWN_ATTEMPTS = 15  # drawn in the table; the counts come from the server's aggregate (push_stats)

# Every action of this screen that needs the user loaded (all of them).
USER_ACTIONS = frozenset(
    {
        "unenroll",
        "reset_totp",
        "reset_mfa",
        "enroll_code",
        "verify",
        "deactivate_device",
        "activate_device",
        "stop_attack",
        "lift_block",
        "unlock",
        "delete_user",
        "copy_user_email",
        "copy_user_id",
    }
)


def _allow_all(_permission: Permission) -> bool:
    return True


def os_major(version: str) -> int | None:
    match = re.match(r"\s*(\d+)", version)
    return int(match.group(1)) if match else None


def _until(lock: TotpLockState) -> str:
    """`` until 2026-01-01 14:05`` (local time) while a (temporary) lock-out is in force."""
    return f" until {stamp(lock.lockedUntil)}" if lock.lockedUntil is not None else ""


def totp_lock_words(user: SystemUser) -> str:
    """``locked (5 of 5 failures)``, ``2 of 5 failures``, or '' when nothing failed."""
    lock = user.totpLock
    if lock.locked:
        return f"locked ({lock.failures} of {lock.maxFailures} failures)"
    if lock.failures:
        return f"{lock.failures} of {lock.maxFailures} failures"
    return ""


def troubleshooting_hints(
    user: SystemUser,
    device: PushEndpoint | None,
    attempts: list[PushAttempt],
    now: datetime,
    stats: PushStats | None = None,
    can: Callable[[Permission], bool] = _allow_all,
) -> list[tuple[str, str]]:
    """(style, hint) pairs drawn from the data and the Protect FAQ, most urgent first.

    The push-bombing figures come from ``stats`` (the server's aggregate over
    :data:`~console.models.BOMBING_WINDOW`, the same one the Activity panel reads). A hint
    names a key only when ``can`` says the key's role has it; otherwise it says whom to ask.
    """
    hints: list[tuple[str, str]] = []
    block = user.pushBlock
    if block is not None:
        lift = " X lifts it." if can(Permission.PUSH_BLOCK) else ""
        hints.append(
            (
                "bold red",
                (
                    f"New pushes are blocked until {clock_zone(block.blockedUntil, now)} "
                    f"(by {printable(block.blockedBy, max_length=60)}).{lift}"
                ),
            )
        )
    hostile = stats.hostile if stats is not None else 0
    bombing = hostile >= BOMBING_THRESHOLD
    if bombing and stats is not None:
        steps = ["The user should deny unexpected pushes and report them; check app and location before approving."]
        if block is None:
            if can(Permission.PUSH_BLOCK):
                steps.append("Stop the attack (X): cancel pending pushes and block new ones for a while.")
            else:
                steps.append("Ask an admin or the help desk to stop the attack (block new pushes).")
        if can(Permission.MFA_RESET):
            steps.append("Consider resetting MFA (R) and requiring biometric approval.")
        hints.append(
            (
                "bold red",
                f"Possible push bombing: {hostile} blocked or denied attempts in the {window_words()} "
                f"({stats.blocked} blocked, {stats.denied} denied). " + " ".join(steps),
            )
        )
    if stats is not None and stats.fraud:
        hints.append(("red", f"The user reported {stats.fraud} push(es) as fraud in the {window_words()}."))
    if user.totpLock.locked:
        lock = user.totpLock
        fix = (
            "reset TOTP (T) and have them enroll again"
            if can(Permission.TOTP_RESET)
            else "ask an admin or the help desk to reset TOTP"
        )
        hints.append(
            (
                "bold red",
                (
                    f"TOTP is locked after {lock.failures} wrong codes (limit {lock.maxFailures}): every code "
                    f"is refused{_until(lock)}; {fix}."
                ),
            )
        )
    if device is not None and device.state != "active":
        ways = []
        if can(Permission.DEVICES_WRITE):
            ways.append("reactivate it (A)")
        if can(Permission.ENROLL):
            ways.append("re-enroll (E creates an enrollment code)")
        fix = " or ".join(ways) if ways else "an admin can reactivate it"
        hints.append(("red", f"Device is {printable(device.state)}: pushes to it are refused; {fix}."))
    if device is not None:
        major = os_major(device.device.osVersion)
        minimum = MIN_OS_MAJOR.get(device.device.os)
        if major is not None and minimum is not None and major < minimum:
            hints.append(
                (
                    "red",
                    (
                        f"{device.device.os} {printable(device.device.osVersion)} is unsupported: Protect needs "
                        f"{min_os_words()}. Update the OS or use TOTP/WebAuthn."
                    ),
                )
            )
    recent = attempts[:10]
    expired = [a for a in recent if a.status == PushStatus.EXPIRED]
    # During an attack unanswered pushes are the attack, not a phone problem.
    if not bombing and (len(expired) >= 2 or (recent and recent[0].status == PushStatus.EXPIRED)):
        hints.append(
            (
                "yellow",
                (
                    f"{len(expired)} recent push(es) expired unanswered: check that the device clock is set "
                    "automatically, notifications are on for Protect, Do Not Disturb is off, and the phone has "
                    "Wi-Fi or data."
                ),
            )
        )
    if device is not None and device.device.os == "Android":
        hints.append(("", "Android: push notifications do not wake the device; the user must wake it first."))
    if device is not None and not device.device.uvEnabled:
        hints.append(("", "Biometric is off on the device: turning it on makes accidental approvals harder."))
    new_code = (
        "create a new enrollment code (E)" if can(Permission.ENROLL) else "ask the help desk for a new enrollment code"
    )
    push = user.mfaEnrollment.pushStatus
    if push == EnrollmentStatus.PENDING_ACTIVATION:
        hints.append(
            ("yellow", "Push enrollment pending: the user has not scanned the code yet (codes last 10 minutes).")
        )
    elif push == EnrollmentStatus.ENROLLMENT_EXPIRED:
        hints.append(("yellow", f"Push enrollment expired: {new_code}."))
    elif device is None:
        hints.append(("", f"No push device: {new_code}; the app needs camera permission to scan it."))
    enrollment = user.mfaEnrollment
    if all(
        s != EnrollmentStatus.ENROLLED
        for s in (enrollment.pushStatus, enrollment.totpStatus, enrollment.webAuthnStatus)
    ):
        hints.append(("yellow", "No MFA factor enrolled: the user can only log in during a grace period."))
    if user.account_locked:
        unlock = " L unlocks it." if can(Permission.USERS_WRITE) else " An admin can unlock it."
        hints.append(("red", "The account is locked." + unlock))
    if user.state != "ACTIVATED":
        hints.append(("yellow", f"Account state is {printable(user.state)}."))
    return hints


def _grid() -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def _section(title: str, body: RenderableType) -> Group:
    return Group(Text(title, style="bold underline"), body)


def _yes_no(value: bool) -> Text:
    return Text("yes" if value else "no")


def _device_words(device: PushEndpoint) -> str:
    info = device.device
    return (
        f"{printable(info.make)} {printable(info.model)} ({info.os} {printable(info.osVersion)}), "
        f'named "{printable(device.name, max_length=60)}"'
    )


def title_text(user: SystemUser, now: datetime) -> Text:
    """Name, username and email; then what stops the user logging in, first (not a row further down)."""
    title = Text(end="")
    name = user_name(user)
    title.append(name or printable(user.username), style="bold")
    if name:
        title.append(f"  {printable(user.username)}", style="dim")
    title.append(f"  <{printable(user.email)}>")
    if user.state != "ACTIVATED":
        title.append(f"  {printable(user.state).lower()}", style="bold yellow")
    if user.account_locked:
        title.append("  LOCKED", style="bold red")
    if user.pushBlock is not None:
        block = user.pushBlock
        title.append("\n")
        title.append(
            f" push blocked until {clock_zone(block.blockedUntil, now)} by "
            f"{printable(block.blockedBy, max_length=60)} ",
            style="bold white on red",
        )
    return title


def profile_section(user: SystemUser) -> Group:
    # Two label/value pairs a line: the profile is full width, so this keeps it to four lines.
    profile = Table.grid(padding=(0, 1))
    for _pair in range(2):
        profile.add_column(style="bold", no_wrap=True)
        profile.add_column(overflow="fold")
    state = Text(printable(user.state).lower())  # as the Users table writes it
    if user.account_locked:
        state.append("  locked", style="bold red")
    profile.add_row("Username", Text(printable(user.username)), "Email", Text(printable(user.email)))
    profile.add_row("First", Text(printable(user.firstname)), "Last", Text(printable(user.lastname)))
    profile.add_row("Display", Text(printable(user.displayname)), "ID", Text(user.id, style="dim"))
    profile.add_row("State", state, "Created", Text(stamp(user.created)))
    return _section("Profile", profile)


def mfa_section(user: SystemUser, caller_check: Text | None = None) -> Group:
    """The factors and their state; ``caller_check``: the last Verify's outcome on this screen."""
    mfa = _grid()
    enrollment = user.mfaEnrollment
    mfa.add_row("Overall", enrollment_text(enrollment.overallStatus))
    mfa.add_row("Push", enrollment_text(enrollment.pushStatus))
    totp = enrollment_text(enrollment.totpStatus)
    lock_words = totp_lock_words(user)
    if lock_words:
        totp.append(f" · {lock_words}", style="bold red" if user.totpLock.locked else "yellow")
    mfa.add_row("TOTP", totp)
    mfa.add_row("WebAuthn", enrollment_text(enrollment.webAuthnStatus))
    mfa.add_row("Configured", _yes_no(user.mfa.configured))
    if user.requireUserVerification:
        mfa.add_row("Biometric", Text("required for approvals", style="yellow"))
    if user.mfa.exclusion:
        until = user.mfa.exclusionUntil
        mfa.add_row("Grace", Text(f"until {stamp(until)}" if until else "open-ended", style="yellow"))
    if caller_check is not None:
        mfa.add_row("Caller check", caller_check)
    return _section("MFA", mfa)


def device_section(device: PushEndpoint | None, now: datetime) -> Group:
    grid = _grid()
    if device is None:
        grid.add_row("", Text("no push device enrolled", style="dim"))
        return _section("Push device", grid)
    info = device.device
    grid.add_row("Name", Text(printable(device.name)))
    grid.add_row("Device", Text(f"{printable(info.make)} {printable(info.model)}"))
    grid.add_row("OS", Text(f"{info.os} {printable(info.osVersion)}"))
    grid.add_row("App", Text(printable(info.appVersion)))
    grid.add_row("Biometric", _yes_no(info.uvEnabled))
    active = device.state == "active"
    grid.add_row("State", Text(printable(device.state), style="" if active else "bold red"))
    grid.add_row("Enrolled", Text(stamp(device.enrollmentDate)))
    last = device.lastUsedDate
    age = ago(last, now)
    # Date only next to the age: the panel is half of an 80-column screen.
    used = f"{stamp(last)[:10]} ({age})" if "ago" in age else stamp(last)
    grid.add_row("Last used", Text(used if last else "never"))
    opt_out = device.privacy.diagnosticsOptOut
    grid.add_row("Diagnostics", Text("opted out (not collected)" if opt_out else "shared (no user info)"))
    return _section("Push device", grid)


def hints_text(hints: list[tuple[str, str]]) -> Text:
    """The troubleshooting hints as one bulleted Text (not a Group: Static measures a Group's wrapped
    height one line short)."""
    text = Text("Troubleshooting\n", style="", end="")
    text.stylize("bold underline", 0, len("Troubleshooting"))
    for style, hint in hints:
        text.append("• ", style=style or "dim")
        text.append(hint + "\n", style=style)
    if not hints:
        text.append("Nothing stands out.", style="dim")
    text.rstrip()
    return text


def attempts_section(attempts: list[PushAttempt], stats: PushStats | None, now: datetime) -> Group:
    """The server's counts over the bombing window as the heading, the latest attempts below."""
    heading = f"Push attempts in the {window_words()}"
    if stats is not None:
        parts = [f"{stats.total} total", f"{stats.blocked} blocked", f"{stats.denied} denied"]
        if stats.fraud:
            parts.append(f"{stats.fraud} reported fraud")
        if stats.pending:
            parts.append(f"{stats.pending} pending")
        heading += ": " + ", ".join(parts)
    if attempts:
        heading += f" (latest {len(attempts)} below)"
    # The table is sized when drawn, for the width it gets.
    body: RenderableType = AttemptsTable(attempts[:SHOWN_ATTEMPTS], now) if attempts else Text("none", style="dim")
    return _section(heading, body)


class UserDetailScreen(ConsoleScreen):
    TITLE = "User"

    # Seconds between refreshes while this screen is in view (no modal over it); tests speed it up.
    REFRESH_SECONDS: ClassVar[float] = 5.0

    ACTION_PERMISSIONS: ClassVar[dict[str, Permission]] = {
        "unenroll": Permission.DEVICES_UNENROLL,
        "reset_totp": Permission.TOTP_RESET,
        "reset_mfa": Permission.MFA_RESET,
        "enroll_code": Permission.ENROLL,
        "verify": Permission.TOTP_VERIFY,
        "deactivate_device": Permission.DEVICES_WRITE,
        "activate_device": Permission.DEVICES_WRITE,
        "stop_attack": Permission.PUSH_BLOCK,
        "lift_block": Permission.PUSH_BLOCK,
        "unlock": Permission.USERS_WRITE,
        "delete_user": Permission.USERS_WRITE,
    }

    BINDINGS = [
        Binding("U", "unenroll", "Unenroll", tooltip="Unenroll the push device"),
        Binding("T", "reset_totp", "Reset TOTP"),
        Binding("R", "reset_mfa", "Reset MFA"),
        Binding("E", "enroll_code", "Enroll", tooltip="Enroll code: create a push enrollment code"),
        Binding("V", "verify", "Verify", tooltip="Verify a caller's TOTP code"),
        # One key, two bindings: check_action keeps only the one that applies to the state, so the
        # footer names what the key will do. The tooltip is the palette's/help's wording.
        Binding("A", "deactivate_device", "Deactivate", tooltip="Deactivate the push device"),
        Binding("A", "activate_device", "Activate", tooltip="Activate the push device"),
        Binding("X", "stop_attack", "Stop attack", tooltip="Stop attack: cancel pending pushes, block new ones"),
        Binding("X", "lift_block", "Lift block", tooltip="Lift the push block"),
        Binding("L", "unlock", "Unlock", tooltip="Unlock the account"),
        # Rare: the footer leaves these out first when it is short of room (footer.DROP_ORDER);
        # help and the palette always list them.
        Binding("D", "delete_user", "Delete", tooltip="Delete the user"),
        Binding("c", "copy_user_email", "Copy email", tooltip="Copy the email (OSC 52)"),
        Binding("C", "copy_user_id", "Copy id", tooltip="Copy the user id (OSC 52)"),
    ]

    def __init__(self, user_ref: str) -> None:
        super().__init__()
        self.user_ref = user_ref  # id, email or username, as given
        self.user: SystemUser | None = None
        self.device: PushEndpoint | None = None
        self.attempts: list[PushAttempt] = []
        self.stats: PushStats | None = None
        self.caller_check: Text | None = None
        self.loads = 0  # completed loads (tests wait on it)
        self.refresh_ticks = 0  # refresh timer ticks, taken or skipped (tests wait on it)
        self.pending_action: str | None = None  # typed before the user loaded; runs once it has

    # ------------------------------------------------------------ layout
    def compose_body(self) -> Iterable[Widget]:
        # What a support desk needs first comes first (an 80x24 screen shows the hints, MFA and
        # the device without scrolling); the body scrolls with arrows/PgUp/PgDn/Home/End.
        with VerticalScroll(id="detail-body"):
            yield Static(Text("loading…", style="dim"), id="detail-title", markup=False)
            yield Static("", id="detail-hints", markup=False)
            with Horizontal(classes="detail-row"):
                yield Static("", id="detail-mfa", classes="detail-panel", markup=False)
                yield Static("", id="detail-device", classes="detail-panel", markup=False)
            yield Static("", id="detail-attempts", markup=False)
            yield Static("", id="detail-profile", markup=False)

    def main_widget(self) -> Widget | None:
        try:
            return self.query_one("#detail-body")
        except Exception:  # noqa: BLE001 - not composed yet
            return None

    def on_mount(self) -> None:
        # A key typed ahead may dismiss this screen before it mounts: then there is nothing to focus.
        with suppress(NoMatches):
            self.query_one("#detail-body").focus()
        self.watch(self.app, "whoami", self._whoami_changed, init=False)
        # Kept: the app holds timers weakly.
        self._detail_refresh_timer = self.set_interval(self.REFRESH_SECONDS, self._refresh_tick, name="detail-refresh")
        self.load()

    def reload_data(self) -> None:
        self.load()

    def _refresh_tick(self) -> None:
        """Fresh data while the admin looks at it: not under a modal, not from behind another screen,
        not while a load runs, not over an error banner (``r`` retries that)."""
        self.refresh_ticks += 1
        if self.app.screen is not self or self.user is None or self.error_visible:
            return
        if any(w.group == "detail-load" and w.is_running for w in self.workers):
            return
        self.load()

    # ------------------------------------------------------------ loading
    @work(exclusive=True, group="detail-load", exit_on_error=False)
    async def load(self) -> None:
        api = self.console_app.api
        try:
            if self.user is None:
                user = await api.find_user(self.user_ref)
            else:
                user = await api.get_user(self.user.id)
            endpoints, attempts, stats = await asyncio.gather(
                api.push_endpoints(user.id),
                api.push_attempts(user_id=user.id, limit=SHOWN_ATTEMPTS),
                self._push_stats(user.id),
            )
        except ApiError as exc:
            if self.user is None:
                what = "User not found" if isinstance(exc, NotFound) else "User not loaded"
                self.query_one("#detail-title", Static).update(
                    Text(f"{what}: {printable(self.user_ref, max_length=80)}")
                )
                self._drop_pending(f"{what.lower()}")
            self.report_error(exc, self.load)
            return
        self.user = user
        self.device = endpoints[0] if endpoints else None
        self.attempts = list(attempts.results)
        self.stats = stats
        self.loads += 1
        self.clear_error()
        self._show()
        self.refresh_bindings()
        self._run_pending()

    async def _push_stats(self, user_id: str) -> PushStats | None:
        """The server's counts over the bombing window (the Activity panel's aggregate)."""
        api = self.console_app.api
        try:
            return await api.push_stats(user_id, since=display.now() - BOMBING_WINDOW)
        except NotFound:
            return None  # a service without the aggregate: no counts rather than wrong ones

    @property
    def label(self) -> str:
        return user_label(self.user) if self.user else printable(self.user_ref, max_length=60)

    def _can(self, permission: Permission) -> bool:
        return bool(self.console_app.can(permission))

    def _show(self) -> None:
        user = self.user
        assert user is not None
        body = self.query_one("#detail-body", VerticalScroll)
        scroll_y = body.scroll_y  # a refresh never moves the admin's place
        now = display.now()
        hints = troubleshooting_hints(user, self.device, self.attempts, now, self.stats, self._can)
        for selector, renderable in (
            ("#detail-title", title_text(user, now)),
            ("#detail-hints", hints_text(hints)),
            ("#detail-mfa", mfa_section(user, self.caller_check)),
            ("#detail-device", device_section(self.device, now)),
            ("#detail-attempts", attempts_section(self.attempts, self.stats, now)),
            ("#detail-profile", profile_section(user)),
        ):
            self.query_one(selector, Static).update(renderable)
        if scroll_y:
            self.call_after_refresh(body.scroll_to, y=scroll_y, animate=False, immediate=True)

    # ------------------------------------------------------------ which keys act now
    def _waiting_for_data(self) -> bool:
        """The user (or the key's permissions) is still on its way, and nothing failed."""
        if self.error_visible:
            return False
        return self.user is None or self.console_app.whoami is None

    def _may_wait(self, action: str) -> bool:
        """Whether a key for ``action`` pressed while loading waits for the data (else the frame says why)."""
        if action not in USER_ACTIONS or not self._waiting_for_data():
            return False
        permission = self.ACTION_PERMISSIONS.get(action)
        if permission is None:
            return True
        if self.console_app.profile.readonly:
            return False
        return self.console_app.whoami is None or self._can(permission)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Two bindings share `A` and two share `X`: only the one that applies to the state is live.
        if action in ("deactivate_device", "activate_device"):
            inactive = self.device is not None and self.device.state != "active"
            if inactive != (action == "activate_device"):
                return False
        if action in ("stop_attack", "lift_block"):
            blocked = self.user is not None and self.user.pushBlock is not None
            if blocked != (action == "lift_block"):
                return False
        if self._may_wait(action):
            return True  # runs, and waits for the data (see _act)
        return super().check_action(action, parameters)

    def action_unavailable(self, action: str) -> str | None:
        reason = super().action_unavailable(action)
        if reason is not None or action not in USER_ACTIONS:
            return reason
        user, device = self.user, self.device
        if user is None:
            if self.error_visible:
                return f"The user did not load ({printable(self.user_ref, max_length=60)}): r reloads."
            return f"Still loading {printable(self.user_ref, max_length=60)}."
        totp_missing = user.mfaEnrollment.totpStatus == EnrollmentStatus.NOT_ENROLLED
        if action == "unenroll" and device is None:
            return "No push device to unenroll."
        if action == "reset_totp" and totp_missing:
            return "TOTP is not enrolled: nothing to reset."
        if action == "verify" and totp_missing:
            return "TOTP is not enrolled: there is no code to verify."
        if action in ("deactivate_device", "activate_device") and device is None:
            return "No push device to deactivate."
        if action == "lift_block" and user.pushBlock is None:
            return "No push block in force."
        if action == "unlock" and not user.account_locked:
            return "The account is not locked."
        return None

    # ------------------------------------------------------------ running actions
    def _act(self, action: str, flow: Callable[[], object]) -> None:
        """Run ``flow`` for ``action`` now, or once the user has loaded, or say why it cannot."""
        if self._waiting_for_data() and self._may_wait(action):
            if self.pending_action is None:
                self.pending_action = action  # acts on this screen's user as soon as it is here
            elif self.pending_action != action:
                first = describe_action(self, self.pending_action)
                self.notify(
                    f"Still loading: {first} is waiting to run first.",
                    title="Not now",
                    severity="warning",
                    markup=False,
                )
            return
        reason = self.action_unavailable(action)
        if reason is not None:
            self.notify(reason, title="Not now", severity="warning", markup=False)
            return
        flow()

    def _run_pending(self) -> None:
        action = self.pending_action
        if action is None or self._waiting_for_data():
            return
        self.pending_action = None
        if self.app.screen is not self:
            return  # the admin has gone elsewhere: the key was meant for this screen
        getattr(self, f"action_{action}")()

    def _drop_pending(self, why: str) -> None:
        action, self.pending_action = self.pending_action, None
        if action is not None:
            what = describe_action(self, action)
            self.notify(f"Not done ({what}): {why}.", title="Not now", severity="warning", markup=False, timeout=10)

    def _whoami_changed(self) -> None:
        self._run_pending()

    def _done(self, message: str) -> None:
        self.notify(message, title="Done", markup=False)
        self.load()

    async def _change(self, what: str, call: Callable[[], Awaitable[T]], done: Callable[[T], str]) -> bool:
        """Make one change: on an error ``<what> failed: ...`` (never retried blindly), else ``done(result)``
        as a toast and the user reloaded. Whether it went through."""
        try:
            result = await call()
        except ApiError as exc:
            self._failed(what, exc)
            return False
        self._done(done(result))
        return True

    async def _confirm_change(
        self, question: ConfirmScreen, what: str, call: Callable[[], Awaitable[T]], done: Callable[[T], str]
    ) -> None:
        """Ask ``question``; on yes, :meth:`_change`."""
        if await self.ask(question):
            await self._change(what, call, done)

    def _failed(self, what: str, exc: ApiError) -> None:
        # Changes are never retried blindly: `r` reloads the view, the admin decides again.
        self.notify(f"{what} failed: {printable(str(exc), max_length=200)}", severity="error", markup=False)
        self.report_error(exc, self.load)

    def _question(self, text: str, after: str = "?") -> Text:
        question = Text(text + " ")
        question.append(self.label, style="bold")
        question.append(after)
        return question

    # Each key: a plain action (runs now, waits for the data, or says why) starting a worker
    # that asks and acts.
    def action_unenroll(self) -> None:
        self._act("unenroll", self._unenroll)

    def action_reset_totp(self) -> None:
        self._act("reset_totp", self._reset_totp)

    def action_reset_mfa(self) -> None:
        self._act("reset_mfa", self._reset_mfa)

    def action_enroll_code(self) -> None:
        self._act("enroll_code", self._enroll_code)

    def action_verify(self) -> None:
        self._act("verify", self._verify)

    def action_deactivate_device(self) -> None:
        self._act("deactivate_device", lambda: self._set_device_state("inactive"))

    def action_activate_device(self) -> None:
        self._act("activate_device", lambda: self._set_device_state("active"))

    def action_stop_attack(self) -> None:
        self._act("stop_attack", self._stop_attack)

    def action_lift_block(self) -> None:
        self._act("lift_block", self._lift_block)

    def action_unlock(self) -> None:
        self._act("unlock", self._unlock)

    def action_delete_user(self) -> None:
        self._act("delete_user", self._delete_user)

    def action_copy_user_email(self) -> None:
        self._act("copy_user_email", lambda: self._copy("email"))

    def action_copy_user_id(self) -> None:
        self._act("copy_user_id", lambda: self._copy("id"))

    # ------------------------------------------------------------ the flows
    def _copy(self, what: str) -> None:
        user = self.user
        assert user is not None
        value = user.email if what == "email" else user.id
        self.app.copy_to_clipboard(value)
        self.notify(
            f"Copied the {what} of {user_label(user)}: {printable(value, max_length=120)}",
            title="Copied",
            markup=False,
        )

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def _unenroll(self) -> None:
        user, device = self.user, self.device
        if user is None or device is None:
            return
        body = Text(
            f"Device: {_device_words(device)}, enrolled {stamp_zone(device.enrollmentDate)}.\n"
            "Push stops working until the user enrolls again."
        )
        await self._confirm_change(
            ConfirmScreen(self._question("Unenroll the push device of"), body),
            "Unenroll",
            lambda: self.console_app.api.unenroll_device(user.id, device.id),
            lambda _: f"Push device of {user_label(user)} unenrolled.",
        )

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def _set_device_state(self, state: str) -> None:
        """Turn the push device off (pushes refused, still enrolled) or back on, after confirming."""
        user, device = self.user, self.device
        if user is None or device is None or device.state == state:
            return
        if state == "inactive":
            verb, done = "Deactivate", "deactivated"
            effect = (
                "Deactivate: pushes to this device are refused until reactivated (A); its pending "
                "pushes are cancelled. The device stays enrolled."
            )
        else:
            verb, done = "Activate", "activated"
            effect = "Activate: the user gets push notifications on this device again."
        body = Text(f"Device: {_device_words(device)}.\n{effect}")
        await self._confirm_change(
            ConfirmScreen(self._question(f"{verb} the push device of"), body, confirm_label=f"{verb} (y)"),
            verb,
            lambda: self.console_app.api.update_push_endpoint(user.id, device.id, state=state),
            lambda _: f"Push device of {user_label(user)} {done}.",
        )

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def _reset_totp(self) -> None:
        user = self.user
        if user is None:
            return
        body = Text("Their current authenticator codes stop working; they must enroll TOTP again.")
        if user.totpLock.locked:
            body.append(f"\nTOTP is {totp_lock_words(user)}: the reset also clears the lock-out.")
        if await self.ask(ConfirmScreen(self._question("Reset TOTP for"), body)):
            await self._do_reset_totp(user)

    async def _do_reset_totp(self, user: SystemUser) -> None:
        await self._change(
            "Reset TOTP",
            lambda: self.console_app.api.reset_totp(user.id),
            lambda _: f"TOTP reset for {user_label(user)}.",
        )

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def _reset_mfa(self) -> None:
        user, device = self.user, self.device
        if user is None:
            return
        answer = await self.ask(grace_days_prompt(self.label))
        if answer is None:
            return
        days = int(answer) if answer else 0
        until = display.now() + timedelta(days=days)
        grace = (
            f"Grace period: {days} day{'s' if days != 1 else ''} (until {stamp_zone(until)}) to log in without "
            "MFA while re-enrolling."
            if days
            else "No grace period: the user cannot pass MFA until they enroll again."
        )
        # Only what this user actually has, and what the reset leaves alone.
        enrollment = user.mfaEnrollment
        removed: list[str] = []
        if device is not None:
            removed.append(
                f"push device {printable(device.device.make)} {printable(device.device.model)} "
                f'("{printable(device.name, max_length=40)}")'
            )
        elif enrollment.pushStatus == EnrollmentStatus.PENDING_ACTIVATION:
            removed.append("the pending push enrollment code")
        if enrollment.totpStatus != EnrollmentStatus.NOT_ENROLLED:
            removed.append("TOTP" + (f" ({totp_lock_words(user)})" if totp_lock_words(user) else ""))
        kept = ["WebAuthn"] if enrollment.webAuthnStatus == EnrollmentStatus.ENROLLED else []
        lines = [f"Removes: {', '.join(removed)}." if removed else "Removes: nothing (no push device, no TOTP)."]
        if kept:
            lines.append(f"Kept: {', '.join(kept)} (a reset does not touch it).")
        lines.append(grace)
        what = f"removed {' and '.join(removed)}" if removed else "nothing to remove"
        if kept:
            what += f"; kept {', '.join(kept)}"
        grace_done = f"; {days}-day grace until {stamp_zone(until)}" if days else "; no grace period"
        await self._confirm_change(
            ConfirmScreen(self._question("Reset ALL MFA for"), Text("\n".join(lines))),
            "Reset MFA",
            lambda: self.console_app.api.reset_mfa(user.id, grace_days=days or None),
            lambda _: f"All MFA reset for {user_label(user)}: {what}{grace_done}.",
        )

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def _enroll_code(self) -> None:
        user, device = self.user, self.device
        if user is None:
            return
        question = self._question("Create a push enrollment code for")
        body = Text("A one-time code, valid 10 minutes. Enrolling a new device replaces the current one.")
        deactivate_first = False
        if device is not None and device.state == "active":
            last = device.lastUsedDate
            body.append(
                f"\nTheir push device {_device_words(device)} is still ACTIVE"
                + (f" (last used {stamp_zone(last)})" if last else "")
                + ": if the phone is lost, it keeps approving pushes until the new one enrolls.",
                style="bold",
            )
            if self._can(Permission.DEVICES_WRITE):
                body.append("\nd deactivates it first (pushes to it are refused), then creates the code.")
                choice = await self.ask(
                    ChoiceScreen(question, body, [("d", "Deactivate first (d)"), ("y", "Code only (y)")])
                )
                if choice is None:
                    return
                deactivate_first = choice == "d"
            else:
                stop = ", or stop an attack with X (blocks all pushes)" if self._can(Permission.PUSH_BLOCK) else ""
                body.append(f"\nYour role cannot deactivate it: ask an admin to deactivate it{stop}.")
                if not await self.ask(ConfirmScreen(question, body, confirm_label="Create (y)")):
                    return
        elif not await self.ask(ConfirmScreen(question, body, confirm_label="Create (y)")):
            return
        api = self.console_app.api
        if deactivate_first and device is not None:
            try:
                await api.update_push_endpoint(user.id, device.id, state="inactive")
            except ApiError as exc:
                self._failed("Deactivate", exc)
                return
            self.notify(f"Push device of {user_label(user)} deactivated.", title="Done", markup=False)
        try:
            code = await api.create_enrollment(user.id)
        except ApiError as exc:
            self._failed("Enrollment code", exc)
            return
        self.load()
        await self.app.push_screen_wait(EnrollmentCodeScreen(user_label(user), code))

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def _verify(self) -> None:
        user = self.user
        if user is None:
            return
        lock = user.totpLock
        if lock.locked:
            # A code would be refused whatever the caller reads: say so, and offer the way out.
            words = f"TOTP of {user_label(user)} is {totp_lock_words(user)}: every code is refused until TOTP is reset."
            if not self._can(Permission.TOTP_RESET):
                self.notify(
                    words + " Ask an admin or the help desk to reset TOTP.",
                    title="TOTP locked",
                    severity="warning",
                    markup=False,
                )
                return
            body = Text(words + "\nReset TOTP instead? The user must enroll TOTP again.")
            question = self._question("TOTP is locked for", ". Reset TOTP instead?")
            if await self.ask(ConfirmScreen(question, body, confirm_label="Reset TOTP (y)")):
                await self._do_reset_totp(user)
            return
        if lock.failures:
            left = lock.maxFailures - lock.failures
            warning = (
                f"{lock.failures} of {lock.maxFailures} failures so far: a wrong code now counts toward the lock-out"
                + (" and locks TOTP." if left <= 1 else f" ({left} left before TOTP locks).")
            )
        else:
            warning = (
                f"A wrong code counts toward the lock-out ({lock.maxFailures} wrong codes within 15 minutes lock TOTP)."
            )
        code = await self.ask(totp_code_prompt(self.label, warning))
        if not code:
            return
        try:
            result = await self.console_app.api.verify_totp(user.id, code)
        except ApiError as exc:
            self._failed("Verify", exc)
            return
        at = clock_zone(display.now())
        if result.valid:
            self.caller_check = Text(f"✓ valid ({at})", style="bold green")
            self.notify(f"Code VALID for {user_label(user)}.", title="Caller verified", markup=False)
        else:
            reason = f": {printable(result.reason, max_length=120)}" if result.reason else ""
            self.caller_check = Text(f"✗ NOT valid ({at}){reason}", style="bold red")
            self.notify(
                f"Code NOT valid for {user_label(user)}{reason}.", title="Not verified", severity="error", markup=False
            )
        self.load()

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def _stop_attack(self) -> None:
        user = self.user
        if user is None:
            return
        stats = self.stats
        body = Text("Cancels the pending pushes of ")
        body.append(user_label(user), style="bold")
        body.append(" and refuses new ones until the block ends (resources get 429 with its end).")
        if stats is not None:
            body.append(
                f"\nIn the {window_words()}: {stats.blocked} blocked, {stats.denied} denied, {stats.pending} pending."
            )
        question = self._question("Stop the push attack on")
        choice = await self.ask(StopAttackScreen(question, body, biometric_already=user.requireUserVerification))
        if choice is None:
            return

        def stopped(result: PushBlockResult) -> str:
            parts = [f"new pushes blocked until {clock_zone(result.blockedUntil)}"]
            if choice.cancel_pending:
                parts.append(f"{result.cancelled} pending cancelled")
            if choice.require_user_verification:
                parts.append("biometric approval now required")
            return f"Push attack on {user_label(user)} stopped: {'; '.join(parts)}."

        await self._change(
            "Stop attack",
            lambda: self.console_app.api.block_push(
                user.id,
                minutes=choice.minutes,
                cancel_pending=choice.cancel_pending,
                require_user_verification=choice.require_user_verification,
            ),
            stopped,
        )

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def _lift_block(self) -> None:
        user = self.user
        if user is None or user.pushBlock is None:
            return
        block = user.pushBlock
        body = Text(
            f"Blocked until {stamp_zone(block.blockedUntil)} by {printable(block.blockedBy, max_length=60)} "
            f"(since {stamp_zone(block.blockedAt)}).\nNew pushes reach the user's device again."
        )
        await self._confirm_change(
            ConfirmScreen(self._question("Lift the push block on"), body, confirm_label="Lift (y)"),
            "Lift block",
            lambda: self.console_app.api.lift_push_block(user.id),
            lambda lifted: (
                f"Push block on {user_label(user)} lifted: pushes flow again."
                if lifted.lifted
                else f"No push block was in force for {user_label(user)} (it had ended): nothing changed."
            ),
        )

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def _unlock(self) -> None:
        user = self.user
        if user is None:
            return
        body = Text(
            "The account is locked: the user cannot log in. Unlocking lets them log in again; MFA is unchanged."
        )
        await self._confirm_change(
            ConfirmScreen(self._question("Unlock the account of"), body, confirm_label="Unlock (y)"),
            "Unlock",
            lambda: self.console_app.api.unlock_user(user.id),
            lambda _: f"Account of {user_label(user)} unlocked.",
        )

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def _delete_user(self) -> None:
        user = self.user
        if user is None:
            return
        username = printable(user.username)
        title = self._question("Delete the user", f" <{printable(user.email)}>?")
        has = ["the user"]
        if self.device is not None:
            has.append("their push device")
        has.append("enrollment codes and pending pushes")
        explanation = (
            f"Removes {', '.join(has)}. The audit log and push history are kept. "
            f"This cannot be undone. Type the username {username} to delete."
        )
        answer = await self.ask(type_to_confirm_prompt(title, explanation, username, submit_label="Delete"))
        if answer != username:
            return
        try:
            deleted = await self.console_app.api.delete_user(user.id)
        except ApiError as exc:
            self._failed("Delete", exc)
            return
        message = (
            f"Deleted user {user_label(deleted)} <{printable(deleted.email, max_length=80)}> "
            f"(id {deleted.id}); audit and push history kept."
        )
        self.notify(message, title="Deleted", markup=False, timeout=10)
        if self.app.screen is self:
            self.app.pop_screen()  # nothing left to show here
