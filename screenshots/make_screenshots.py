"""Regenerate the console's screenshots (SVG) from a throwaway demo backend.

Run from the repository root::

    .venv/bin/python screenshots/make_screenshots.py

It seeds a temporary SQLite store with 5,000 synthetic users (fixed seed),
serves it on loopback, creates some live activity and a few admin actions
through the real API, then drives the real console with Textual's Pilot and
saves one SVG per screen next to this file. Every wait is on a condition (data
loaded, modal open), never a bare sleep. The demo database is deleted at the
end; the script fails if any API key shows up in an SVG.
"""

from __future__ import annotations

import asyncio
import html
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable without installing the package

from console.client import ApiError, DeviceClient, ProtectClient, RateLimited  # noqa: E402
from console.config import ConnectionProfile  # noqa: E402
from console.demo import APPS, ATTACK_CONTEXT, LOCATIONS, PHONES, RESOURCES  # noqa: E402
from console.models import DeviceInfo, EnrollmentStatus, Role, SystemUser  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent
SIZE = (110, 34)
USERS = 5000
SEED = 1  # the seeded directory, and so the seeded push-bombing victim, are the same every run
SCRIPT_SEED = 11  # choices made by this script (who gets a phone, which pushes they answer)
LIVE_PHONES = 6
TIMEOUT = 20.0


@dataclass
class Demo:
    url: str
    console_key: str = field(repr=False)
    setup_key: str = field(repr=False)
    service_key: str = field(repr=False)
    victim: SystemUser | None = None

    @property
    def secrets(self) -> list[str]:
        return [self.console_key, self.setup_key, self.service_key]


def say(message: str) -> None:
    print(message, flush=True)


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- demo data


async def make_activity(demo: Demo) -> None:
    """Phones, pushes and answers, a push-bombing burst and two admin actions, all through the API."""
    rng = random.Random(SCRIPT_SEED)
    admin = ProtectClient(demo.url, demo.setup_key)
    service = ProtectClient(demo.url, demo.service_key, retries=0)
    phones: list[tuple[SystemUser, DeviceInfo, DeviceClient]] = []
    try:
        # Admin actions for the audit log: raise the concurrent-push cap, reset one user's TOTP.
        _settings, etag = await admin.get_settings()
        await admin.update_settings({"push": {"concurrentLimit": {"max": 2}}}, etag)
        totp_users = await admin.list_users(
            filters=["state:$eq:ACTIVATED", "mfaEnrollment.totpStatus:$eq:ENROLLED"], sort="username", skip=40, limit=1
        )
        await admin.reset_totp(totp_users.results[0].id)

        # A few users without a phone enroll one, as the app does: admin code, then the device API.
        # Picked from across the directory (not one alphabetical run), the same ones every time.
        no_phone = ["state:$eq:ACTIVATED", "mfaEnrollment.pushStatus:$eq:NOT_ENROLLED"]
        total = (await admin.list_users(filters=no_phone, limit=1)).totalCount
        chosen: list[SystemUser] = []
        for skip in sorted(rng.sample(range(total), LIVE_PHONES)):
            chosen.extend((await admin.list_users(filters=no_phone, sort="username", skip=skip, limit=1)).results)
        for user in chosen:
            make, model, os_name, versions = rng.choice(PHONES)
            info = DeviceInfo(make=make, model=model, os=os_name, osVersion=rng.choice(versions),
                              appVersion="2.14.0", uvEnabled=rng.random() < 0.7)
            code = await admin.create_enrollment(user.id)
            phone = DeviceClient(demo.url)
            await phone.enroll(code.code, model, info)
            phones.append((user, info, phone))

        # Logins: each phone gets two or three pushes, answered mostly yes; one left pending.
        for n, (user, info, phone) in enumerate(phones):
            for _ in range(rng.choice((2, 3))):
                created = await service.create_push(
                    user.id, rng.choice(RESOURCES), app=rng.choice(APPS), location=rng.choice(LOCATIONS),
                    ip=f"198.51.100.{rng.randrange(1, 255)}",
                )
                if n == 0:
                    continue  # pending: the user has not looked at the phone yet
                roll = rng.random()
                decision = "approve" if roll < 0.8 else "deny"
                await phone.respond(created.id, decision, user_verified=info.uvEnabled,
                                    report_fraud=decision == "deny" and roll > 0.9)
        # Privacy: one phone opts out of diagnostics (its reports are dropped); the others send a few.
        for n, (_user, info, phone) in enumerate(phones):
            if n == 1:
                await phone.settings(diagnostics_opt_out=True)
            for event in ("app_open", "push_received", "push_answered"):
                report = {"event": event, "appVersion": info.appVersion, "os": f"{info.os} {info.osVersion}",
                          "latencyMs": rng.randrange(80, 2500)}
                await phone.diagnostics(report)

        # The seeded victim of push bombing: the user with the most blocked pushes in the last hour.
        since = datetime.now(timezone.utc) - timedelta(hours=1)
        blocked = await admin.push_attempts(status="blocked", since=since, limit=100)
        victim_id, _count = Counter(a.userId for a in blocked.results).most_common(1)[0]
        demo.victim = await admin.get_user(victim_id)
        # ...and the attack goes on right now: two pushes fill the cap, the rest are blocked.
        for _ in range(6):
            try:
                await service.create_push(victim_id, "VPN", **ATTACK_CONTEXT)
            except RateLimited:
                pass
    finally:
        for closing in (admin, service, *(phone for _u, _i, phone in phones)):
            await closing.aclose()


# ---------------------------------------------------------------- the console


async def settle(app, pilot, *, modal: bool = False) -> None:
    """Let running loads finish and the screen repaint.

    With a modal up, the action worker that opened it is waiting on the modal,
    so only the other workers are waited for.
    """
    if modal:
        await wait_for(
            lambda: all(not w.is_running or w.group == "detail-action" for w in app.workers), "workers to finish"
        )
    else:
        await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def rows_loaded(table) -> bool:
    return table.total is not None and all(table.row_at(i) is not None for i in table.visible_rows())


def svg_text(svg: str) -> str:
    """The characters drawn in a Rich/Textual SVG, in order, without whitespace (spans and lines joined)."""
    drawn = "".join(html.unescape(m) for m in re.findall(r"<text\b[^>]*>([^<]*)</text>", svg))
    return re.sub(r"\s", "", drawn)


def leaks_a_key(svg: str, secrets: list[str]) -> bool:
    """Whether any 16 consecutive characters of a key are drawn: catches keys that are cropped,
    wrapped or split across styles, not just whole ones."""
    drawn = svg_text(svg)
    return any(
        secret[i : i + 16] in drawn or secret[i : i + 16] in svg
        for secret in secrets
        for i in range(max(1, len(secret) - 15))
    )


async def shoot(app, pilot, name: str, demo: Demo, saved: list[Path], *, modal: bool = False) -> None:
    await settle(app, pilot, modal=modal)
    path = Path(app.save_screenshot(filename=name, path=str(OUT_DIR)))
    text = path.read_text(encoding="utf-8")
    if leaks_a_key(text, demo.secrets):
        path.unlink()
        raise SystemExit(f"screenshots: {name} showed (part of) an API key; deleted it")
    drawn = svg_text(text)
    if "loading…" in drawn or "Loading" in drawn:
        say(f"  warning: {name} still shows a loading placeholder")
    saved.append(path)
    say(f"  {path}")


async def take_screenshots(demo: Demo) -> list[Path]:
    from console.tui.app import ProtectConsoleApp
    from console.tui.screens.activity import ActivityScreen
    from console.tui.screens.audit import AuditScreen
    from console.tui.screens.privacy import PrivacyScreen
    from console.tui.screens.settings import SettingsScreen
    from console.tui.screens.user_detail import UserDetailScreen
    from console.tui.screens.users import UsersScreen, _has_push
    from console.tui.modals.confirm import ConfirmScreen
    from console.tui.modals.choice import ChoiceScreen
    from console.tui.modals.stop_attack import StopAttackScreen
    from console.tui.modals.enrollment import EnrollmentCodeScreen

    victim = demo.victim
    assert victim is not None
    saved: list[Path] = []
    app = ProtectConsoleApp(ConnectionProfile("demo", demo.url, demo.console_key))
    async with app.run_test(size=SIZE) as pilot:

        def users_ready() -> bool:
            screen = app.screen
            if not isinstance(screen, UsersScreen) or app.whoami is None or not rows_loaded(screen.table):
                return False
            # The device column fills in for the rows on screen once the view rests (when it is shown).
            if not (screen.table.shows("device") or screen.table.shows("last_used")):
                return True
            return all(
                screen.table.row_at(i).id in screen.devices
                for i in screen.table.visible_rows()
                if _has_push(screen.table.row_at(i))
            )

        await wait_for(users_ready, "the users table")
        await shoot(app, pilot, "users.svg", demo, saved)

        # Search for the push-bombing victim, then open them from the results.
        term = victim.username
        await pilot.press("slash", *term)
        users: UsersScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: users.search_term == term and users_ready(), "search results")
        def row_id(index: int) -> str | None:
            row = users.table.row_at(index)
            return row.id if row is not None else None

        await wait_for(lambda: any(row_id(i) == victim.id for i in users.table.visible_rows()), "the victim's row")
        await shoot(app, pilot, "users_search.svg", demo, saved)
        await pilot.press("enter")  # one match: opens it; several: search box -> results
        await wait_for(
            lambda: isinstance(app.screen, UserDetailScreen) or users.table.has_focus, "the results or the user"
        )
        if not isinstance(app.screen, UserDetailScreen):
            for _ in users.table.visible_rows():
                if row_id(users.table.cursor_row) == victim.id:
                    break
                await pilot.press("down")
            await pilot.press("enter")
        await wait_for(
            lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None, "the user detail"
        )
        detail: UserDetailScreen = app.screen  # type: ignore[assignment]
        if detail.user.id != victim.id:
            raise SystemExit(f"screenshots: opened {detail.user.username}, not {victim.username}")
        await shoot(app, pilot, "user_detail.svg", demo, saved)

        # A destructive action asks first (and is cancelled here).
        if detail.user.mfaEnrollment.totpStatus == EnrollmentStatus.ENROLLED:
            await pilot.press("T")
        else:
            await pilot.press("U")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        await shoot(app, pilot, "confirm.svg", demo, saved, modal=True)
        await pilot.press("n")
        await wait_for(lambda: app.screen is detail, "the detail after cancelling")

        # Stop attack: one confirmation (cancelled here, so the screenshots keep the attack live).
        await pilot.press("X")
        await wait_for(lambda: isinstance(app.screen, StopAttackScreen), "the stop-attack confirmation")
        await shoot(app, pilot, "stop_attack.svg", demo, saved, modal=True)
        await pilot.press("n")
        await wait_for(lambda: app.screen is detail, "the detail after cancelling the stop")

        # A one-time enrollment code with its QR code (the demo database is thrown away).
        await pilot.press("E")
        # On an active device the question offers to deactivate it first; `y` creates the code only.
        await wait_for(lambda: isinstance(app.screen, (ConfirmScreen, ChoiceScreen)), "the enrollment confirmation")
        await pilot.press("y")
        await wait_for(lambda: isinstance(app.screen, EnrollmentCodeScreen), "the enrollment code")
        await shoot(app, pilot, "enroll_qr.svg", demo, saved, modal=True)
        await pilot.press("escape")
        await wait_for(lambda: app.screen is detail, "the detail after the code")
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, UsersScreen), "the users screen")

        await pilot.press("2")
        await wait_for(lambda: isinstance(app.screen, ActivityScreen), "the activity screen")
        activity: ActivityScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: rows_loaded(activity.table) and activity.panel.checked, "push attempts")
        await wait_for(lambda: activity.updated_at is not None, "the activity status line")
        await shoot(app, pilot, "activity.svg", demo, saved)

        await pilot.press("3")
        await wait_for(
            lambda: isinstance(app.screen, SettingsScreen) and app.screen.settings is not None, "the settings"
        )
        await shoot(app, pilot, "settings.svg", demo, saved)

        await pilot.press("4")
        await wait_for(lambda: isinstance(app.screen, PrivacyScreen), "the privacy screen")
        privacy: PrivacyScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: privacy.summary is not None and rows_loaded(privacy.table), "privacy data")
        await shoot(app, pilot, "privacy.svg", demo, saved)

        await pilot.press("5")
        await wait_for(lambda: isinstance(app.screen, AuditScreen), "the audit screen")
        audit: AuditScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: rows_loaded(audit.table) and (audit.table.total or 0) > 0, "audit events")
        await shoot(app, pilot, "audit.svg", demo, saved)
    return saved


# ---------------------------------------------------------------- main


def main() -> int:
    from console.server.app import create_app
    from console.server.runner import ServerThread
    from console.server.seed import seed_directory
    from console.server.services.keys import create_key
    from console.server.store import open_store

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="protect-screenshots-") as tmp:
        store = open_store(Path(tmp) / "protect.db")
        server: ServerThread | None = None
        try:
            report = seed_directory(store, USERS, rng_seed=SEED)
            say(f"Seeded {report['users']:,} users in {report['seconds']} s.")
            server = ServerThread(create_app(store))
            url = server.start()
            demo = Demo(
                url=url,
                console_key=create_key(store, "demo console", Role.ADMIN),
                setup_key=create_key(store, "demo setup", Role.ADMIN),
                service_key=create_key(store, "demo logins", Role.SERVICE),
            )
            try:
                asyncio.run(make_activity(demo))
            except ApiError as exc:
                raise SystemExit(f"screenshots: the demo backend refused the setup: {exc}") from exc
            say(f"Activity created; victim {demo.victim.username}. Screenshots:")
            saved = asyncio.run(take_screenshots(demo))
        finally:
            if server is not None:
                server.stop()
            store.dispose()
    say(f"Wrote {len(saved)} SVGs to {OUT_DIR} in {time.perf_counter() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
