"""QA: the console against hostile data from every source, odd terminal sizes, key mashing, outages.

Everything runs against the real service (the ``backend`` fixture) and the real app under
``run_test``. "Reaches the terminal" is checked on the bytes the compositor would write for a
full repaint, not on widget state, so a control character hiding in any widget is caught.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest
from textual.command import CommandList, CommandPalette
from textual.screen import ModalScreen
from textual.widgets import OptionList

from console.client import DeviceClient, ProtectClient, RateLimited
from console.config import ConnectionProfile
from console.models import DeviceInfo, Role, SystemUserCreate, SystemUserUpdate
from console.tui.app import ProtectConsoleApp
from console.tui.modals.audit_detail import AuditDetailScreen
from console.tui.modals.confirm import ConfirmScreen
from console.tui.modals.help import HelpScreen
from console.tui.screens.activity import ActivityScreen
from console.tui.screens.audit import AuditScreen
from console.tui.screens.privacy import PrivacyScreen
from console.tui.screens.settings import SettingsScreen
from console.tui.screens.user_detail import UserDetailScreen
from console.tui.screens.users import UsersScreen
from console.tui.widgets.virtual_table import VirtualTable
from tests.helpers import wait_for
from tests.tui.tui_helpers import burst, console_app

OSC = "\x1b]0;pwn\x07"  # sets the terminal/tmux title if it gets through
CSI_C1 = "\x9b31m"  # 8-bit CSI
RLO = "\u202e"
LRI = "\u2066"
# Markers Textual itself never writes: any of them in the output is our data leaking through.
LEAKS = ("\x1b]0;pwn", "\x07", "\x9b", RLO, LRI, "\x1b[2J", "\x1b[31mEVIL", "\x00")

HOSTILE_TEXT = f"[@click=app.quit]x[/]{OSC}{RLO}evil\x1b[31mEVIL{CSI_C1}[/x]\x1b[2J{LRI}e\u0301\u0301\u0301 👩‍💻"


async def settled(app: ProtectConsoleApp) -> None:
    """Every worker done (``wait_for_complete`` raises when an exclusive worker is superseded meanwhile)."""
    await wait_for(lambda: not any(w.is_running for w in app.workers), timeout=20)


async def drained(app: ProtectConsoleApp, pilot) -> None:
    """Every queued key and message handled and every worker done or waiting on a modal's answer (or the app
    gone): what a crash needs in order to show."""
    await pilot.pause()
    if app.is_running:
        await wait_for(
            lambda: (
                not app.is_running or isinstance(app.screen, ModalScreen) or not any(w.is_running for w in app.workers)
            ),
            timeout=20,
        )
        await pilot.pause()


def terminal_output(app: ProtectConsoleApp) -> str:
    """Exactly what a full repaint of the current screen sends to the terminal."""
    return app.screen._compositor.render_full_update().render_segments(app.console)


def assert_nothing_leaks(app: ProtectConsoleApp, where: str) -> str:
    assert app.is_running, f"app died on {where}"
    out = terminal_output(app)
    leaked = [marker for marker in LEAKS if marker in out]
    assert not leaked, f"{where}: {leaked!r} reached the terminal"
    return out


async def hostile_directory(backend) -> dict[str, str]:
    """Hostile text from every source the console shows: directory, device, push context, audit, key name."""
    ids: dict[str, str] = {}
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        # Sorts first by username ("!" < letters), so it is on the first page of every list.
        victim = await admin.create_user(
            SystemUserCreate(
                username="!evil[/]",
                email="evil[/]@hostile.example",
                firstname=HOSTILE_TEXT,
                lastname=HOSTILE_TEXT,
                displayname=HOSTILE_TEXT,
            )
        )
        ids["victim"] = victim.id
        # A later rename by "the user" lands in the audit log as before/after.
        await admin.update_user(victim.id, SystemUserUpdate(firstname=HOSTILE_TEXT + "2", lastname="L" + OSC))
        code = await admin.create_enrollment(victim.id)
        phone = DeviceClient(backend.url)
        try:
            await phone.enroll(
                code.code,
                HOSTILE_TEXT,
                DeviceInfo(
                    make="[bold]Evil" + OSC,
                    model=HOSTILE_TEXT,
                    os="iOS",
                    osVersion="17.1",
                    appVersion="2.6.0" + RLO,
                    uvEnabled=True,
                ),
            )
            await phone.settings(diagnostics_opt_out=True)  # so it is in the opted-out filter too
            await phone.enroll_totp()  # so the TOTP actions (T, V) are live
        finally:
            await phone.aclose()
    # Push bombing from a hostile resource/app/location: one pending, the rest blocked (cap 1).
    async with ProtectClient(backend.url, backend.key(Role.SERVICE)) as service:
        await service.create_push(victim.id, HOSTILE_TEXT, app=HOSTILE_TEXT, location=HOSTILE_TEXT, ip="1.2.3.4" + RLO)
        for _ in range(6):
            with pytest.raises(RateLimited):
                await service.create_push(victim.id, HOSTILE_TEXT, app=HOSTILE_TEXT, location=HOSTILE_TEXT)
    return ids


def hostile_app(backend, **kwargs) -> ProtectConsoleApp:
    # The key's own name is shown in the header and is the actor in the audit log.
    key = backend.key(Role.ADMIN, name=f"ops{OSC}[/]{RLO}")
    return ProtectConsoleApp(ConnectionProfile(f"prof{OSC}", backend.url + "/", key), **kwargs)


async def visit(app: ProtectConsoleApp, pilot, key: str, screen_type: type, table_id: str | None) -> None:
    await pilot.press(key)
    await wait_for(lambda: isinstance(app.screen, screen_type))
    screen = app.screen
    if table_id is not None:
        table = screen.query_one(f"#{table_id}", VirtualTable)
        await wait_for(lambda: table.total is not None and table.row_at(0) is not None)
    await pilot.pause()


SIZES = [(200, 60)]  # 80x24: the mashing tests below; 40x12: the tiny-terminal test


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
async def test_hostile_text_from_every_source_never_reaches_the_terminal(backend, size) -> None:
    ids = await hostile_directory(backend)
    app = hostile_app(backend)
    async with app.run_test(size=size) as pilot:
        await wait_for(lambda: isinstance(app.screen, UsersScreen) and app.whoami is not None)
        users = app.screen
        table = users.query_one("#users-table", VirtualTable)
        await wait_for(lambda: table.row_at(0) is not None)
        await settled(app)
        await pilot.pause()
        assert table.row_at(0).id == ids["victim"]
        shown = assert_nothing_leaks(app, "users")
        if size[0] >= 200:  # wide enough to see the data itself: there, but defused
            assert "[@click=app.quit]x[/]\ufffd]0;pwn\ufffd" in shown
            assert "ops\ufffd]0;pwn\ufffd[/]" in shown  # the key's name, in the header

        await visit(app, pilot, "2", ActivityScreen, "activity-attempts")
        activity: ActivityScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: activity.panel.checked)
        await pilot.pause()
        assert any(s.user_id == ids["victim"] for s in activity.panel.suspects)
        assert_nothing_leaks(app, "activity")
        # The push-bombing panel, focused; Enter opens the victim.
        await pilot.press("b")
        await pilot.pause()
        assert isinstance(app.focused, OptionList)
        app.focused.highlighted = next(i for i, s in enumerate(activity.panel.suspects) if s.user_id == ids["victim"])
        await pilot.pause()
        assert_nothing_leaks(app, "activity bombing panel")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        await pilot.pause()
        assert app.screen.user.id == ids["victim"]
        assert_nothing_leaks(app, "detail from bombing panel")
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, ActivityScreen))

        await visit(app, pilot, "3", SettingsScreen, None)
        await wait_for(lambda: app.screen.settings is not None)
        assert_nothing_leaks(app, "settings")

        await visit(app, pilot, "4", PrivacyScreen, "privacy-devices")
        assert_nothing_leaks(app, "privacy")
        await pilot.press("o")  # opted-out only: the hostile device is among them
        privacy: PrivacyScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: privacy.device_total is not None and privacy.table.row_at(0) is not None)
        await pilot.pause()
        assert any(privacy.table.row_at(i).user.id == ids["victim"] for i in range(privacy.device_total))
        assert_nothing_leaks(app, "privacy opted-out")

        await visit(app, pilot, "5", AuditScreen, "audit-events")
        assert_nothing_leaks(app, "audit")
        audit: AuditScreen = app.screen  # type: ignore[assignment]
        # Open the events that carry hostile text in full: the user.update has it as before/after.
        hostile_actions = ("user.create", "user.update", "device.enroll")
        rows = [i for i in range(min(audit.table.total or 0, 10)) if audit.table.row_at(i).action in hostile_actions]
        assert len(rows) == 3
        for index in rows:
            audit.table.cursor_row = index
            await pilot.press("enter")
            await wait_for(lambda: isinstance(app.screen, AuditDetailScreen))
            await pilot.pause()
            assert_nothing_leaks(app, f"audit detail #{index}")
            await pilot.press("escape")
            await wait_for(lambda: isinstance(app.screen, AuditScreen))

        await pilot.press("question_mark")
        await wait_for(lambda: isinstance(app.screen, HelpScreen))
        assert_nothing_leaks(app, "help")
        await pilot.press("escape")

        # The palette's user lookup.
        await pilot.press("1")
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        await pilot.press("ctrl+p")
        await wait_for(lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"evil")
        palette = app.screen

        def prompts() -> list[str]:
            options = palette.query_one(CommandList)
            return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]

        await wait_for(lambda: any("Open user" in p for p in prompts()))
        await pilot.pause()
        assert_nothing_leaks(app, "palette")
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running


# ----------------------------------------------------------------- key mashing

CONSOLE_SCREENS = (UsersScreen, ActivityScreen, SettingsScreen, PrivacyScreen, AuditScreen, UserDetailScreen)


async def assert_sane_and_usable(app: ProtectConsoleApp, pilot) -> None:
    """Alive, no error banner, back to the list with Esc, and the list still answers a search."""
    assert app.is_running
    for _ in range(6):  # whatever modal or detail the mashing left open
        if isinstance(app.screen, UsersScreen | ActivityScreen | SettingsScreen | PrivacyScreen | AuditScreen):
            break
        await pilot.press("escape")
        await pilot.pause()
    await pilot.press("1")
    await wait_for(lambda: isinstance(app.screen, UsersScreen))
    users: UsersScreen = app.screen  # type: ignore[assignment]
    await settled(app)
    await pilot.pause()
    assert len(app.screen_stack) == 1
    for mode_screen in CONSOLE_SCREENS:
        for screen in app.screen_stack:
            if isinstance(screen, mode_screen):
                assert not screen.error_visible, f"{mode_screen.__name__} shows an error after mashing"
    # Whatever the keys left in the search box and the MFA filter, the admin can get back to a plain search.
    # (The filter first: Enter on a search with exactly one match opens that user, where `f` does nothing.)
    while users.filter_index != 0:
        await pilot.press("f")
    await pilot.press("slash", "end", "ctrl+u", *"evil", "enter")
    await wait_for(lambda: users.table.total == 1 and users.table.row_at(0) is not None)
    assert users.table.row_at(0).username == "!evil[/]"
    assert_nothing_leaks(app, "after mashing")


async def test_rapid_key_mashing_across_screens_while_loading_leaves_a_sane_app(backend) -> None:
    await hostile_directory(backend)
    app = hostile_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        # The brief's sequence, as one burst right after start-up: every screen is still loading.
        burst(app, ["1", "2", "3", "4", "5", "1", "enter", "escape", "slash", "a", "b", "escape"])
        await pilot.pause()
        assert app.is_running
        # More of the same, in bursts, with only a frame between them.
        for keys in (
            ["2", "b", "enter", "escape", "5", "enter", "escape", "4", "o", "o", "3", "e", "escape"],
            ["1", "f", "s", "S", "pagedown", "end", "home", "enter", "question_mark", "escape", "escape"],
            ["ctrl+p", "e", "v", "escape", "2", "p", "p", "f", "1", "down", "down", "enter", "E", "n"],
            ["R", "escape", "V", "escape", "escape", "5", "1"],
        ):
            burst(app, keys)
            await pilot.pause()
            assert app.is_running
        await assert_sane_and_usable(app, pilot)


async def test_random_key_storm_never_kills_the_app(backend) -> None:
    """A fixed pseudo-random storm of every non-destructive key (no `y`, `q`, `tab`: those may confirm or quit)."""
    import random

    await hostile_directory(backend)
    keys = [
        "1",
        "2",
        "3",
        "4",
        "5",
        "enter",
        "escape",
        "slash",
        "a",
        "e",
        "v",
        "l",
        "!",
        "question_mark",
        "ctrl+p",
        "down",
        "up",
        "pagedown",
        "pageup",
        "home",
        "end",
        "left",
        "right",
        "f",
        "s",
        "S",
        "o",
        "p",
        "b",
        "r",
        "n",
        "E",
        "U",
        "T",
        "R",
        "V",
        "A",
        "0",
        "9",
        "backspace",
        "j",
        "k",
        "u",
    ]
    rng = random.Random(20240611)
    storm = [rng.choice(keys) for _ in range(180)]
    app = hostile_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        for start in range(0, len(storm), 30):
            chunk = storm[start : start + 30]
            burst(app, chunk)
            await pilot.pause()
            assert app.is_running, f"died within keys {chunk}"
            assert_nothing_leaks(app, f"storm {start}")
            if start % 120 == 0:  # now and then, let the data land mid-storm too
                await settled(app)
        await assert_sane_and_usable(app, pilot)


async def test_tiny_terminal_40x12_every_screen_and_modal_and_resizes(backend) -> None:
    ids = await hostile_directory(backend)
    app = hostile_app(backend, open_user=ids["victim"])
    async with app.run_test(size=(40, 12)) as pilot:
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
        await wait_for(lambda: app.whoami is not None)
        detail: UserDetailScreen = app.screen  # type: ignore[assignment]
        await pilot.pause()
        assert_nothing_leaks(app, "detail 40x12")
        # Every modal the detail opens, at a size none of them was designed for.
        for key, closes in (("U", "n"), ("T", "escape"), ("R", "escape"), ("E", "n"), ("V", "escape"), ("A", "n")):
            await pilot.press(key)
            await wait_for(lambda: app.screen is not detail)
            await pilot.pause()
            assert_nothing_leaks(app, f"detail modal {key} at 40x12")
            await pilot.press(closes)
            await wait_for(lambda: app.screen is detail)
        assert detail.device is not None  # nothing was confirmed
        # Enrollment code and its QR code on a terminal too small for it: shown, no crash.
        await pilot.press("E")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(lambda: app.screen is not detail and type(app.screen).__name__ == "EnrollmentCodeScreen")
        await pilot.pause()
        assert_nothing_leaks(app, "enrollment QR at 40x12")
        await pilot.press("escape")
        await wait_for(lambda: app.screen is detail)
        # Every screen at 40x12, then shrunk to a single cell and grown huge on the busiest two.
        for key in ("escape", "2", "3", "4", "5", "1"):
            await pilot.press(key)
            await pilot.pause()
            assert_nothing_leaks(app, f"{key} at 40x12")
            if key in ("2", "1"):
                for size in ((1, 1), (200, 60), (40, 12)):
                    await pilot.resize_terminal(*size)
                    await pilot.pause()
                    assert_nothing_leaks(app, f"{key} at {size}")
        await assert_sane_and_usable(app, pilot)


# ------------------------------------------------------------------ outages

OUTAGE_SCREENS = [("2", ActivityScreen), ("3", SettingsScreen), ("4", PrivacyScreen), ("5", AuditScreen)]


def screen_loaded(screen) -> bool:
    if isinstance(screen, SettingsScreen):
        return screen.settings is not None
    table = screen.query_one(VirtualTable)
    return table.total is not None and table.row_at(0) is not None


async def test_backend_stopped_on_each_screen_then_restarted(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        await admin.create_user(
            SystemUserCreate(username="outage.witness", email="witness@test.example")
        )  # an audit row
    # The real client with one retry instead of three: the same code path, a shorter outage to wait out.
    app = console_app(backend, retries=1)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, UsersScreen) and app.whoami is not None)
        screens = {}
        for key, screen_type in OUTAGE_SCREENS:  # visit each once while the backend is up
            await pilot.press(key)
            await wait_for(
                lambda screen_type=screen_type: isinstance(app.screen, screen_type) and screen_loaded(app.screen)
            )
            screens[key] = app.screen
            assert not app.screen.error_visible

        backend.stop()
        for key, screen_type in OUTAGE_SCREENS:
            await pilot.press(key)
            await wait_for(lambda key=key: app.screen is screens[key])
            await pilot.press("r")  # reload: the request fails, the banner says so
            await wait_for(lambda key=key: screens[key].error_visible, timeout=20)
            assert app.is_running and app.screen is screens[key]
            assert "Backend unavailable" in str(app.screen.query_one("#error-banner").message)
            assert_nothing_leaks(app, f"{screen_type.__name__} while down")

        backend.restart()
        for key, _screen_type in OUTAGE_SCREENS:
            await pilot.press(key)
            await wait_for(lambda key=key: app.screen is screens[key])
            await pilot.press("r")  # the banner's retry
            await wait_for(lambda key=key: not screens[key].error_visible and screen_loaded(screens[key]), timeout=20)
        await settled(app)
        await pilot.pause()
        assert app.is_running and not any(s.error_visible for s in screens.values())
    await app.api.aclose()


async def test_read_only_profile_storm_with_confirm_keys_changes_nothing(backend) -> None:
    """An admin key behind a read-only profile: even a storm that includes `y`, `tab` and `enter` (which
    would confirm any modal) must change nothing on the server."""
    import random

    ids = await hostile_directory(backend)
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as http:

        async def server_state() -> tuple:
            audit = (await http.get("/api/v2/protect/audit", params={"limit": 1})).json()["totalCount"]
            settings = (await http.get("/api/v2/protect/settings")).json()
            devices = (await http.get(f"/api/v2/users/{ids['victim']}/pushendpoints")).json()
            return audit, settings, devices

        before = await server_state()
        keys = [
            "1",
            "2",
            "3",
            "4",
            "5",
            "enter",
            "escape",
            "y",
            "y",
            "tab",
            "e",
            "U",
            "T",
            "R",
            "V",
            "E",
            "A",
            "down",
            "up",
            "b",
            "o",
            "f",
            "s",
            "3",
            "0",
            "7",
            "space",
            "slash",
            "!",
            "question_mark",
            "ctrl+p",
            "pagedown",
        ]
        rng = random.Random(7)
        storm = [rng.choice(keys) for _ in range(100)]
        profile = ConnectionProfile("ro", backend.url, backend.admin_key, readonly=True)
        app = ProtectConsoleApp(profile, open_user=ids["victim"])
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(lambda: app.whoami is not None and isinstance(app.screen, UserDetailScreen))
            await wait_for(lambda: app.screen.user is not None)
            for start in range(0, len(storm), 20):
                burst(app, storm[start : start + 20])
                await pilot.pause()
                assert app.is_running
            await settled(app)
            # The palette offers no changing action either: its full list (nothing typed yet) holds every command
            # the screen allows, and for an admin profile that is "User: Unenroll", "User: Reset TOTP", ...
            while not isinstance(app.screen, UsersScreen):
                await pilot.press("escape")
            app.open_user(ids["victim"])
            await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
            await pilot.press("ctrl+p")
            await wait_for(
                lambda: isinstance(app.screen, CommandPalette) and app.screen.query_one(CommandList).option_count > 0
            )
            options = app.screen.query_one(CommandList)
            prompts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
            assert any(p.startswith("Go to Users") for p in prompts), prompts  # the list is the full one
            # (Reloading and copying to the clipboard change nothing: they may be offered.)
            changing = [
                p for p in prompts if p.startswith("User:") and not p.startswith(("User: Reload", "User: Copy"))
            ]
            assert not changing, prompts
            await pilot.press("escape")
        assert await server_state() == before


# ------------------------------------------------------------------ the palette under fast typing


async def test_palette_typed_ahead_without_page_keys_survives(backend) -> None:
    await hostile_directory(backend)
    app = hostile_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.whoami is not None)
        for keys in (
            ["ctrl+p", *"evil", "down", "up", "home", "end", "escape"],
            ["ctrl+p", "g", "o", "down", "enter"],  # "Go to ..." chosen before the list is drawn
            ["ctrl+p", *"!evil", "enter"],
        ):
            burst(app, keys)
            await pilot.pause()
            assert app.is_running, keys
            await settled(app)
            while isinstance(app.screen, CommandPalette):
                await pilot.press("escape")
        await assert_sane_and_usable(app, pilot)


async def test_escape_then_palette_typed_ahead_does_not_kill_the_app(backend) -> None:
    """Was a crash (guarded in 7b61721): the Esc landed on the palette ctrl+p had just opened and closed it
    mid-search; Textual's search worker then hit the gone CommandList (NoMatches) and the console exited."""
    app = ProtectConsoleApp(ConnectionProfile("test", backend.url, backend.admin_key))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.whoami is not None)
        await settled(app)
        burst(app, ["escape", "ctrl+p", "x"])
        await drained(app, pilot)
        assert app.is_running


@pytest.mark.parametrize("page_key", ["pagedown", "pageup"])
async def test_palette_page_keys_typed_ahead_do_not_kill_the_app(backend, page_key) -> None:
    """Was a crash (guarded in 7b61721): ctrl+p and PgUp/PgDn in one read (the real xterm parser yields both
    from b"\\x10\\x1b[6~") -> KeyError in Textual's OptionList._move_page before the list was laid out."""
    app = ProtectConsoleApp(ConnectionProfile("test", backend.url, backend.admin_key))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.whoami is not None)
        await settled(app)
        burst(app, ["ctrl+p", page_key])  # what one read from a slow SSH link delivers
        await pilot.pause()
        await pilot.pause()
        assert app.is_running


# ------------------------------------------------------------------ odd but valid directory data


async def test_open_user_by_a_username_that_contains_an_at_sign(backend) -> None:
    """Was a bug (fixed in f27db3a): `--user carol@corp` said not found."""
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        carol = await admin.create_user(SystemUserCreate(username="carol@corp", email="carol.smith@mail.example"))
    app = ProtectConsoleApp(ConnectionProfile("test", backend.url, backend.admin_key), open_user="carol@corp")
    async with app.run_test(size=(80, 24)):
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen))
        detail: UserDetailScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: detail.user is not None or detail.error_visible)
        assert detail.user is not None and detail.user.id == carol.id


@pytest.fixture
def tz_east_of_utc():
    """The admin's terminal runs in Tokyo (UTC+9): local times are later than UTC."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


async def test_detail_of_a_user_with_the_longest_grace_period_east_of_utc(backend, tz_east_of_utc) -> None:
    """Found as a bug: a grace period until 9999-12-31T23:59:59Z (accepted then) made the detail's stamp()
    overflow east of UTC, so the user never showed. Since f27db3a the API caps grace at 365 days; this
    checks the cap and that the longest allowed grace shows. (stamp() itself still has no guard.)"""
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await admin.create_user(SystemUserCreate(username="long.grace", email="long.grace@test.example"))
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as http:
        forever = await http.post(
            f"/api/systemusers/{user.id}/resetmfa", json={"exclusion": True, "exclusionUntil": "9999-12-31T23:59:59Z"}
        )
        assert forever.status_code == 400 and "exclusionUntil" in forever.json()["message"]
        longest = await http.post(
            f"/api/systemusers/{user.id}/resetmfa", json={"exclusion": True, "exclusionDays": 365}
        )
        assert longest.status_code == 200
        until = longest.json()["mfa"]["exclusionUntil"]
    app = ProtectConsoleApp(ConnectionProfile("test", backend.url, backend.admin_key), open_user=user.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen))
        detail: UserDetailScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: detail.user is not None)
        await settled(app)
        await pilot.pause()
        assert not detail.error_visible, detail.query_one("#error-banner").message
        assert f"until {until[:4]}" in terminal_output(app)


async def test_theme_palette_page_keys_typed_ahead_do_not_kill_the_app(backend) -> None:
    """Was a crash (fixed in 03a673f): the guard of 7b61721 missed the plain CommandPalette that Textual's own
    'Theme' system command opens (App.search_themes); PgDn before its list was drawn -> KeyError."""
    app = ProtectConsoleApp(ConnectionProfile("test", backend.url, backend.admin_key))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.whoami is not None)
        await settled(app)
        await pilot.press("ctrl+p")
        await wait_for(lambda: isinstance(app.screen, CommandPalette))
        first = app.screen
        await pilot.press(*"theme")
        await wait_for(
            lambda: (
                "Theme" in str(app.screen.query_one(CommandList).get_option_at_index(0).prompt)
                if app.screen.query_one(CommandList).option_count
                else False
            )
        )
        burst(app, ["enter"])  # the system command "Theme": Textual opens its own palette of themes
        await wait_for(lambda: isinstance(app.screen, CommandPalette) and app.screen is not first, interval=0.001)
        burst(app, ["pagedown"])  # typed ahead, before that palette has drawn its list
        await drained(app, pilot)
        assert app.is_running


# Was a bug (Textual 8.2.8 palette): Enter twice in one read (a double tap, key repeat, or ctrl+p Enter Enter typed
# ahead) ran CommandPalette._select_or_command twice; the second dismiss popped the screen underneath
# (ScreenStackError) and the console exited. GuardedCommandPalette now closes once and ignores later Enters.
@pytest.mark.parametrize("typed_ahead", [False, True], ids=["palette-open-then-enter-enter", "ctrl+p-enter-enter"])
async def test_double_enter_in_the_palette_does_not_kill_the_app(backend, typed_ahead) -> None:
    app = ProtectConsoleApp(ConnectionProfile("test", backend.url, backend.admin_key))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.whoami is not None)
        await settled(app)
        if typed_ahead:
            burst(app, ["ctrl+p", "enter", "enter"])
        else:
            await pilot.press("ctrl+p")
            await wait_for(
                lambda: isinstance(app.screen, CommandPalette) and app.screen.query_one(CommandList).option_count > 0
            )
            await pilot.pause()
            burst(app, ["enter", "enter"])  # the palette is on screen with its list; Enter is hit twice
        await drained(app, pilot)
        assert app.is_running


# ------------------------------------------------------------------ modals opened by workers, keys typed ahead

# Was a bug (fixed in 03a673f): the detail's changing actions and Settings' `e` are workers that push their modal
# a moment later; a screen key or Esc typed right after the action key was handled first, so "Unenroll the push
# device of X?" landed over Activity/Audit/Privacy/the Users list, and `y` there really unenrolled X.


async def open_enrolled_detail(backend, pilot, app) -> UserDetailScreen:
    await wait_for(lambda: app.whoami is not None and isinstance(app.screen, UserDetailScreen))
    detail: UserDetailScreen = app.screen  # type: ignore[assignment]
    await wait_for(lambda: detail.user is not None and detail.device is not None)
    await settled(app)
    await pilot.pause()
    return detail


async def enrolled_user(backend):
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        page = await admin.list_users(
            filters=["mfaEnrollment.pushStatus:$eq:ENROLLED", "mfaEnrollment.totpStatus:$eq:ENROLLED"], limit=1
        )
        return page.results[0]


@pytest.mark.parametrize(
    "keys", [["U", "2"], ["R", "3"], ["T", "5"], ["U", "escape"]], ids=lambda keys: "-then-".join(keys)
)
async def test_a_detail_action_modal_never_opens_over_another_screen(backend, keys) -> None:
    user = await enrolled_user(backend)
    app = ProtectConsoleApp(ConnectionProfile("test", backend.url, backend.admin_key), open_user=user.id)
    async with app.run_test(size=(100, 30)) as pilot:
        detail = await open_enrolled_detail(backend, pilot, app)
        burst(app, keys)  # e.g. U then 2 in one read: "unenroll" and "go to Activity"
        await drained(app, pilot)
        stack = app.screen_stack
        if isinstance(app.screen, ModalScreen):
            assert stack[-2] is detail, [type(s).__name__ for s in stack]


async def test_settings_edit_modal_never_opens_over_another_screen(backend) -> None:
    app = ProtectConsoleApp(ConnectionProfile("test", backend.url, backend.admin_key))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(lambda: app.whoami is not None)
        await pilot.press("3")
        await wait_for(lambda: isinstance(app.screen, SettingsScreen) and app.screen.settings is not None)
        settings = app.screen
        await settled(app)
        await pilot.pause()
        burst(app, ["e", "2"])  # edit the highlighted setting (a toggle: straight to its confirmation), go to Activity
        await drained(app, pilot)
        if isinstance(app.screen, ModalScreen):
            assert app.screen_stack[-2] is settings, [type(s).__name__ for s in app.screen_stack]


async def test_y_on_another_screen_does_not_unenroll_the_user_left_behind(backend) -> None:
    user = await enrolled_user(backend)
    app = ProtectConsoleApp(ConnectionProfile("test", backend.url, backend.admin_key), open_user=user.id)
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        async with app.run_test(size=(100, 30)) as pilot:
            await open_enrolled_detail(backend, pilot, app)
            burst(app, ["U", "2"])
            await wait_for(lambda: isinstance(app.screen, ActivityScreen | ConfirmScreen))
            await drained(app, pilot)
            if isinstance(app.screen, ConfirmScreen):
                await pilot.press("y")  # the admin, now looking at Activity, answers the question on screen
                await settled(app)
        assert len(await admin.push_endpoints(user.id)) == 1, "unenrolled from the Activity screen"
