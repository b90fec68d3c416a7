"""One user: profile, MFA, push device, recent pushes, hints, and the support-desk actions."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from ...client import ApiError, NotFound
from ...models import EnrollmentStatus, Permission, PushAttempt, PushEndpoint, PushStatus, SystemUser
from ...safe_text import printable
from ..formatting import ago, enrollment_text, stamp, user_label, user_name
from ..widgets.attempts_table import AttemptsTable
from ..widgets.confirm import ConfirmScreen
from ..widgets.prompt import grace_days_prompt, totp_code_prompt
from ..widgets.qr import EnrollmentCodeScreen
from .base import ConsoleScreen

RECENT_ATTEMPTS = 50  # fetched for the hints
SHOWN_ATTEMPTS = 15  # drawn in the table
BOMBING_THRESHOLD = 5  # blocked/denied attempts in an hour that suggest push bombing
MIN_OS = {"iOS": 13, "Android": 8}  # from the Protect FAQ

# action -> the permission it needs (from whoami); unlisted actions need none.
ACTION_PERMISSIONS: dict[str, Permission] = {
    "unenroll": Permission.DEVICES_UNENROLL,
    "reset_totp": Permission.TOTP_RESET,
    "reset_mfa": Permission.MFA_RESET,
    "enroll_code": Permission.ENROLL,
    "verify": Permission.TOTP_VERIFY,
    "deactivate_device": Permission.DEVICES_WRITE,
    "activate_device": Permission.DEVICES_WRITE,
}


def os_major(version: str) -> int | None:
    match = re.match(r"\s*(\d+)", version)
    return int(match.group(1)) if match else None


def troubleshooting_hints(
    user: SystemUser, device: PushEndpoint | None, attempts: list[PushAttempt], now: datetime
) -> list[tuple[str, str]]:
    """(style, hint) pairs drawn from the data and the Protect FAQ, most urgent first."""
    hints: list[tuple[str, str]] = []
    last_hour = [a for a in attempts if a.createdAt >= now - timedelta(hours=1)]
    hostile = [a for a in last_hour if a.status in (PushStatus.BLOCKED, PushStatus.DENIED)]
    fraud = [a for a in attempts if a.fraud]
    if len(hostile) >= BOMBING_THRESHOLD:
        hints.append(
            (
                "bold red",
                f"Possible push bombing: {len(hostile)} blocked or denied attempts in the last hour. "
                "The user should deny unexpected pushes and report them; check app and location before "
                "approving; consider resetting MFA (R) and requiring biometric approval.",
            )
        )
    if fraud:
        hints.append(("red", f"The user reported {len(fraud)} recent push(es) as fraud."))
    if device is not None and device.state != "active":
        hints.append(
            (
                "red",
                f"Device is {printable(device.state)}: pushes to it are refused; reactivate it (A, admins) or "
                "re-enroll (E creates an enrollment code).",
            )
        )
    if device is not None:
        major = os_major(device.device.osVersion)
        minimum = MIN_OS.get(device.device.os)
        if major is not None and minimum is not None and major < minimum:
            hints.append(
                (
                    "red",
                    f"{device.device.os} {printable(device.device.osVersion)} is unsupported: Protect needs "
                    "iOS 13+ or Android 8+. Update the OS or use TOTP/WebAuthn.",
                )
            )
    recent = attempts[:10]
    expired = [a for a in recent if a.status == PushStatus.EXPIRED]
    bombing = len(hostile) >= BOMBING_THRESHOLD  # then unanswered pushes are the attack, not a phone problem
    if not bombing and (len(expired) >= 2 or (recent and recent[0].status == PushStatus.EXPIRED)):
        hints.append(
            (
                "yellow",
                f"{len(expired)} recent push(es) expired unanswered: check that the device clock is set "
                "automatically, notifications are on for Protect, Do Not Disturb is off, and the phone has "
                "Wi-Fi or data.",
            )
        )
    if device is not None and device.device.os == "Android":
        hints.append(("", "Android: push notifications do not wake the device; the user must wake it first."))
    if device is not None and not device.device.uvEnabled:
        hints.append(("", "Biometric is off on the device: turning it on makes accidental approvals harder."))
    push = user.mfaEnrollment.pushStatus
    if push == EnrollmentStatus.PENDING_ACTIVATION:
        hints.append(("yellow", "Push enrollment pending: the user has not scanned the code yet (codes last 10 minutes)."))
    elif push == EnrollmentStatus.ENROLLMENT_EXPIRED:
        hints.append(("yellow", "Push enrollment expired: create a new enrollment code (E)."))
    elif device is None:
        hints.append(
            ("", "No push device: create an enrollment code (E); the app needs camera permission to scan it.")
        )
    enrollment = user.mfaEnrollment
    if all(
        s != EnrollmentStatus.ENROLLED for s in (enrollment.pushStatus, enrollment.totpStatus, enrollment.webAuthnStatus)
    ):
        hints.append(("yellow", "No MFA factor enrolled: the user can only log in during a grace period."))
    if user.account_locked:
        hints.append(("red", "The account is locked."))
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


class UserDetailScreen(ConsoleScreen):
    TITLE = "User"

    BINDINGS = [
        Binding("U", "unenroll", "Unenroll"),
        Binding("T", "reset_totp", "Reset TOTP"),
        Binding("R", "reset_mfa", "Reset MFA"),
        Binding("E", "enroll_code", "Enroll code"),
        Binding("V", "verify", "Verify"),
        # One key, two bindings: check_action hides the one that does not apply to the device's
        # state, so the footer names what `A` will do. The tooltip is the palette's/help's wording.
        Binding("A", "deactivate_device", "Deactivate", tooltip="Deactivate the push device"),
        Binding("A", "activate_device", "Activate", tooltip="Activate the push device"),
        Binding("escape", "app.back", "Back"),
    ]

    def __init__(self, user_ref: str) -> None:
        super().__init__()
        self.user_ref = user_ref  # id, email or username, as given
        self.user: SystemUser | None = None
        self.device: PushEndpoint | None = None
        self.attempts: list[PushAttempt] = []
        self.caller_check: Text | None = None

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

    def on_mount(self) -> None:
        self.query_one("#detail-body").focus()
        self.load()

    def reload_data(self) -> None:
        self.load()

    # ------------------------------------------------------------ loading
    @work(exclusive=True, group="detail-load", exit_on_error=False)
    async def load(self) -> None:
        api = self.app.api  # type: ignore[attr-defined]
        try:
            if self.user is None:
                user = await api.find_user(self.user_ref)
            else:
                user = await api.get_user(self.user.id)
            endpoints, attempts = await asyncio.gather(
                api.push_endpoints(user.id), api.push_attempts(user_id=user.id, limit=RECENT_ATTEMPTS)
            )
        except ApiError as exc:
            if self.user is None:
                what = "User not found" if isinstance(exc, NotFound) else "User not loaded"
                self.query_one("#detail-title", Static).update(Text(f"{what}: {printable(self.user_ref, max_length=80)}"))
            self.report_error(exc, self.load)
            return
        self.user = user
        self.device = endpoints[0] if endpoints else None
        self.attempts = list(attempts.results)
        self.clear_error()
        self._show()
        self.refresh_bindings()

    @property
    def label(self) -> str:
        return user_label(self.user) if self.user else printable(self.user_ref, max_length=60)

    def _show(self) -> None:
        user = self.user
        assert user is not None
        now = datetime.now(timezone.utc)
        title = Text(end="")
        name = user_name(user)
        title.append(name or printable(user.username), style="bold")
        if name:
            title.append(f"  {printable(user.username)}", style="dim")
        title.append(f"  <{printable(user.email)}>")
        # An account that cannot log in is the first thing to see, not a row further down.
        if user.state != "ACTIVATED":
            title.append(f"  {printable(user.state).lower()}", style="bold yellow")
        if user.account_locked:
            title.append("  LOCKED", style="bold red")
        self.query_one("#detail-title", Static).update(title)

        # Two label/value pairs a line: the profile is full width, so this keeps it to four lines.
        # Columns as wide as their values (four rows: cheap to measure), so a long email keeps
        # to one line where equal halves would fold it; very long values still fold.
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
        self.query_one("#detail-profile", Static).update(_section("Profile", profile))

        mfa = _grid()
        enrollment = user.mfaEnrollment
        mfa.add_row("Overall", enrollment_text(enrollment.overallStatus))
        mfa.add_row("Push", enrollment_text(enrollment.pushStatus))
        mfa.add_row("TOTP", enrollment_text(enrollment.totpStatus))
        mfa.add_row("WebAuthn", enrollment_text(enrollment.webAuthnStatus))
        mfa.add_row("Configured", _yes_no(user.mfa.configured))
        if user.mfa.exclusion:
            until = user.mfa.exclusionUntil
            mfa.add_row("Grace", Text(f"until {stamp(until)}" if until else "open-ended", style="yellow"))
        if self.caller_check is not None:
            mfa.add_row("Caller check", self.caller_check)
        self.query_one("#detail-mfa", Static).update(_section("MFA", mfa))

        device_grid = _grid()
        device = self.device
        if device is None:
            device_grid.add_row("", Text("no push device enrolled", style="dim"))
        else:
            info = device.device
            device_grid.add_row("Name", Text(printable(device.name)))
            device_grid.add_row("Device", Text(f"{printable(info.make)} {printable(info.model)}"))
            device_grid.add_row("OS", Text(f"{info.os} {printable(info.osVersion)}"))
            device_grid.add_row("App", Text(printable(info.appVersion)))
            device_grid.add_row("Biometric", _yes_no(info.uvEnabled))
            active = device.state == "active"
            device_grid.add_row("State", Text(printable(device.state), style="" if active else "bold red"))
            device_grid.add_row("Enrolled", Text(stamp(device.enrollmentDate)))
            last = device.lastUsedDate
            age = ago(last, now)
            # Date only next to the age: the panel is half of an 80-column screen.
            used = f"{stamp(last)[:10]} ({age})" if "ago" in age else stamp(last)
            device_grid.add_row("Last used", Text(used if last else "never"))
            opt_out = device.privacy.diagnosticsOptOut
            device_grid.add_row(
                "Diagnostics", Text("opted out (not collected)" if opt_out else "shared (no user info)")
            )
        self.query_one("#detail-device", Static).update(_section("Push device", device_grid))

        hints = troubleshooting_hints(user, device, self.attempts, now)
        hint_text = Text("Troubleshooting\n", style="", end="")
        hint_text.stylize("bold underline", 0, len("Troubleshooting"))
        for style, hint in hints:
            hint_text.append("• ", style=style or "dim")
            hint_text.append(hint + "\n", style=style)
        if not hints:
            hint_text.append("Nothing stands out.", style="dim")
        hint_text.rstrip()
        # One Text (not a Group): Static measures a Group's wrapped height one line short.
        self.query_one("#detail-hints", Static).update(hint_text)

        table = AttemptsTable(self.attempts[:SHOWN_ATTEMPTS], now)  # sized when drawn, for the width it gets
        count = f"{len(self.attempts)}{'+' if len(self.attempts) >= RECENT_ATTEMPTS else ''}"
        shown = min(len(self.attempts), SHOWN_ATTEMPTS)
        heading = f"Recent push attempts ({f'latest {shown} of {count}' if shown < len(self.attempts) else count})"
        body: RenderableType = table if self.attempts else Text("none", style="dim")
        self.query_one("#detail-attempts", Static).update(_section(heading, body))

    # ------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        permission = ACTION_PERMISSIONS.get(action)
        if permission is None:
            return super().check_action(action, parameters)
        if not self.app.can(permission):  # type: ignore[attr-defined]
            return False  # hidden: this key or profile may never do it
        user = self.user
        if user is None:
            return None  # shown greyed until the user has loaded
        if action == "unenroll" and self.device is None:
            return None
        if action in ("reset_totp", "verify") and user.mfaEnrollment.totpStatus == EnrollmentStatus.NOT_ENROLLED:
            return None
        if action in ("deactivate_device", "activate_device"):
            if self.device is None:
                return None if action == "deactivate_device" else False  # one greyed `A`, not two
            wants_active = action == "deactivate_device"  # deactivating needs an active device
            return (self.device.state == "active") == wants_active
        return True

    def _done(self, message: str) -> None:
        self.notify(message, title="Done", markup=False)
        self.load()

    def _failed(self, what: str, exc: ApiError) -> None:
        # Changes are never retried blindly: `r` reloads the view, the admin decides again.
        self.notify(f"{what} failed: {printable(str(exc), max_length=200)}", severity="error", markup=False)
        self.report_error(exc, self.load)

    def _question(self, text: str) -> Text:
        question = Text(text + " ")
        question.append(self.label, style="bold")
        question.append("?")
        return question

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def action_unenroll(self) -> None:
        user, device = self.user, self.device
        if user is None or device is None:
            return
        info = device.device
        body = Text(
            f"Device: {printable(info.make)} {printable(info.model)} ({info.os} {printable(info.osVersion)}), "
            f"enrolled {stamp(device.enrollmentDate)}.\nPush stops working until the user enrolls again."
        )
        if not await self.ask(ConfirmScreen(self._question("Unenroll the push device of"), body)):
            return
        try:
            await self.app.api.unenroll_device(user.id, device.id)  # type: ignore[attr-defined]
        except ApiError as exc:
            self._failed("Unenroll", exc)
            return
        self._done(f"Push device of {user_label(user)} unenrolled.")

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def action_deactivate_device(self) -> None:
        await self._set_device_state("inactive")

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def action_activate_device(self) -> None:
        await self._set_device_state("active")

    async def _set_device_state(self, state: str) -> None:
        """Turn the push device off (pushes refused, still enrolled) or back on, after confirming."""
        user, device = self.user, self.device
        if user is None or device is None or device.state == state:
            return
        info = device.device
        what = (
            f"{printable(info.make)} {printable(info.model)} ({info.os} {printable(info.osVersion)}), "
            f"named \"{printable(device.name, max_length=60)}\""
        )
        if state == "inactive":
            verb, done = "Deactivate", "deactivated"
            effect = (
                "Deactivate: pushes to this device are refused until reactivated (A); its pending "
                "pushes are cancelled. The device stays enrolled."
            )
        else:
            verb, done = "Activate", "activated"
            effect = "Activate: the user gets push notifications on this device again."
        body = Text(f"Device: {what}.\n{effect}")
        question = self._question(f"{verb} the push device of")
        if not await self.ask(ConfirmScreen(question, body, confirm_label=f"{verb} (y)")):
            return
        try:
            await self.app.api.update_push_endpoint(user.id, device.id, state=state)  # type: ignore[attr-defined]
        except ApiError as exc:
            self._failed(verb, exc)
            return
        self._done(f"Push device of {user_label(user)} {done}.")

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def action_reset_totp(self) -> None:
        user = self.user
        if user is None:
            return
        body = Text("Their current authenticator codes stop working; they must enroll TOTP again.")
        if not await self.ask(ConfirmScreen(self._question("Reset TOTP for"), body)):
            return
        try:
            await self.app.api.reset_totp(user.id)  # type: ignore[attr-defined]
        except ApiError as exc:
            self._failed("Reset TOTP", exc)
            return
        self._done(f"TOTP reset for {user_label(user)}.")

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def action_reset_mfa(self) -> None:
        user = self.user
        if user is None:
            return
        answer = await self.ask(grace_days_prompt(self.label))
        if answer is None:
            return
        days = int(answer) if answer else 0
        grace = (
            f"Grace period: {days} day{'s' if days != 1 else ''} to log in without MFA while re-enrolling."
            if days
            else "No grace period: the user cannot pass MFA until they enroll again."
        )
        body = Text(f"Removes the push device and the TOTP secret.\n{grace}")
        if not await self.ask(ConfirmScreen(self._question("Reset ALL MFA for"), body)):
            return
        try:
            await self.app.api.reset_mfa(user.id, grace_days=days or None)  # type: ignore[attr-defined]
        except ApiError as exc:
            self._failed("Reset MFA", exc)
            return
        self._done(f"All MFA reset for {user_label(user)}" + (f" ({days}-day grace)." if days else "."))

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def action_enroll_code(self) -> None:
        user = self.user
        if user is None:
            return
        body = Text("A one-time code, valid 10 minutes. Enrolling a new device replaces the current one.")
        if not await self.ask(
            ConfirmScreen(self._question("Create a push enrollment code for"), body, confirm_label="Create (y)")
        ):
            return
        try:
            code = await self.app.api.create_enrollment(user.id)  # type: ignore[attr-defined]
        except ApiError as exc:
            self._failed("Enrollment code", exc)
            return
        self.load()
        await self.app.push_screen_wait(EnrollmentCodeScreen(user_label(user), code))

    @work(exclusive=True, group="detail-action", exit_on_error=False)
    async def action_verify(self) -> None:
        user = self.user
        if user is None:
            return
        code = await self.ask(totp_code_prompt(self.label))
        if not code:
            return
        try:
            result = await self.app.api.verify_totp(user.id, code)  # type: ignore[attr-defined]
        except ApiError as exc:
            self._failed("Verify", exc)
            return
        at = datetime.now().strftime("%H:%M")
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
