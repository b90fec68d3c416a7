"""Activity screen: live push attempts, pause, and the push-bombing panel, over the real service."""

from __future__ import annotations

import re
import time

import pytest
from textual.widgets import OptionList

from console.client import ProtectClient, RateLimited
from console.models import Role
from console.tui.app import ProtectConsoleApp
from console.tui.modals.confirm import ConfirmScreen
from console.tui.screens.activity import ActivityScreen
from tests.helpers import enrolled_device, new_user, wait_for
from tests.tui.tui_helpers import (
    SIZE,
    SMALL,
    burst,
    console_app,
    footer_labels,
    open_screen,
    table_lines,
    table_loaded,
    text_of,
    toasts,
)


@pytest.fixture
def fast_refresh(monkeypatch):
    """Refresh every 0.3 s instead of every few seconds, so the loop is observable quickly."""
    monkeypatch.setattr(ActivityScreen, "REFRESH_SECONDS", 0.3)
    return 0.3


async def open_activity(app: ProtectConsoleApp, pilot) -> ActivityScreen:
    return await open_screen(app, pilot, "2", ActivityScreen, lambda s: table_loaded(s.table))


async def test_attempts_newest_first_and_pause_stops_refresh(backend, fast_refresh) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        total_before = (await admin.push_attempts(limit=1)).totalCount
        user = await new_user(admin, "live[/]user")
        phone = await enrolled_device(admin, backend.url, user.id)
        await phone.aclose()
    service = ProtectClient(backend.url, backend.key(Role.SERVICE))

    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(app, pilot)
        assert screen.table.total == total_before
        first_rows = [screen.table.row_at(i) for i in range(20)]
        stamps = [row.createdAt for row in first_rows]
        assert stamps == sorted(stamps, reverse=True), "newest first"
        assert "updated" in str(screen.query_one("#activity-status").content)

        # Refreshing: a new attempt appears without a key press.
        created = await service.create_push(user.id, "[bold]vpn\x1b[2J")
        await wait_for(lambda: screen.table.row_at(0) is not None and screen.table.row_at(0).id == created.id)
        top = table_lines(screen.table)[1]
        assert "pending" in top and "live[/]user" in top and "[bold]vpn" in top and "\x1b" not in top

        # Paused: no refresh cycle starts and new attempts stay off screen...
        await pilot.press("p")
        assert screen.paused and "PAUSED" in str(screen.query_one("#activity-status").content)
        refreshes = screen.refreshes
        paused_at = time.monotonic()
        second = await service.create_push(user.id, "mail")
        await wait_for(lambda: time.monotonic() - paused_at > 5 * fast_refresh, timeout=5)
        await pilot.pause()
        assert screen.refreshes == refreshes
        assert screen.table.row_at(0).id == created.id
        # ...until resumed.
        await pilot.press("p")
        await wait_for(lambda: screen.table.row_at(0) is not None and screen.table.row_at(0).id == second.id)
        assert screen.refreshes > refreshes

        # Another screen in front: nobody looks, so nothing is polled.
        await pilot.press("3")
        await wait_for(lambda: not isinstance(app.screen, ActivityScreen))
        refreshes = screen.refreshes
        away_at = time.monotonic()
        await wait_for(lambda: time.monotonic() - away_at > 5 * fast_refresh, timeout=5)
        assert screen.refreshes == refreshes
        await pilot.press("2")
        await wait_for(lambda: screen.refreshes > refreshes)
    await service.aclose()


async def test_status_filter_and_colours(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(app, pilot)
        # Blocked is the status filter's sixth stop: all, pending, approved, denied, expired, blocked.
        while screen.status_filter != "blocked":
            await pilot.press("f")
        await wait_for(lambda: screen.table.row_at(0) is not None and screen.table.row_at(0).status == "blocked")
        await wait_for(lambda: "Status: blocked" in footer_labels(screen))  # the filter in force, in the footer
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            assert screen.table.total == (await admin.push_attempts(status="blocked", limit=1)).totalCount
        from console.tui.screens.activity import status_text

        cell = status_text(screen.table.row_at(0))
        assert cell.plain.startswith("blocked") and "magenta" in str(cell.style)


async def test_push_bombing_panel_lists_the_attacked_user_and_enter_opens_them(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        victim = await new_user(admin, "victim")
        phone = await enrolled_device(admin, backend.url, victim.id)
        await phone.aclose()
    async with ProtectClient(backend.url, backend.key(Role.SERVICE)) as service:
        await service.create_push(victim.id, "vpn")
        for _ in range(7):  # the cap (max 1) blocks the rest: a push-bombing pattern
            with pytest.raises(RateLimited):
                await service.create_push(victim.id, "vpn")

    app = console_app(backend)
    opened: list[str] = []
    real_open_user = app.open_user

    def spy_open_user(user_id: str) -> None:
        opened.append(user_id)
        real_open_user(user_id)

    app.open_user = spy_open_user  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(app, pilot)
        await wait_for(lambda: screen.panel.checked)
        suspects = {s.user_id: s for s in screen.panel.suspects}
        assert victim.id in suspects and suspects[victim.id].blocked >= 7
        await pilot.press("b")
        options = screen.panel.query_one("#bombing-list", OptionList)
        assert options.has_focus and options.highlighted == 0
        while options.highlighted_option is None or options.highlighted_option.id != victim.id:
            await pilot.press("down")
        await pilot.press("enter")
        await wait_for(lambda: opened == [victim.id])
        await wait_for(lambda: not isinstance(app.screen, ActivityScreen))


async def test_dead_backend_shows_the_banner_and_recovers(backend, fast_refresh) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(app, pilot)
        backend.stop()
        await wait_for(lambda: screen.error_visible, timeout=20)
        assert app.is_running
        backend.restart()
        # The refresh loop keeps trying; the banner goes once the backend answers again.
        await wait_for(lambda: not screen.error_visible, timeout=20)


# ------------------------------------------------------------------ issue 6, second pass


def ready(modal) -> bool:
    """A modal that has taken focus (its Focus event handled): keys typed now reach it."""
    return modal.focused is not None and modal.focused.has_focus


async def bomb(backend, name: str, *, blocked: int = 7, resource: str = "vpn"):
    """A user under a push-bombing pattern: one pending push, then ``blocked`` refused by the cap."""
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        victim = await new_user(admin, name)
        phone = await enrolled_device(admin, backend.url, victim.id)
        await phone.aclose()
    async with ProtectClient(backend.url, backend.key(Role.SERVICE)) as service:
        await service.create_push(victim.id, resource)
        for _ in range(blocked):
            with pytest.raises(RateLimited):
                await service.create_push(victim.id, resource)
    return victim


def spy_on_open_user(app: ProtectConsoleApp) -> list[str]:
    opened: list[str] = []
    real_open_user = app.open_user

    def spy(user_id: str) -> None:
        opened.append(user_id)
        real_open_user(user_id)

    app.open_user = spy  # type: ignore[method-assign]
    return opened


def panel_text(screen: ActivityScreen) -> str:
    """The panel's title and list as drawn."""
    return text_of(screen, "#bombing-title") + "\n" + text_of(screen, "#bombing-list")


async def test_highlight_stays_on_the_same_attempt_across_refreshes_and_enter_opens_its_user(
    backend, fast_refresh
) -> None:
    """Item 3: new attempts arrive on top at every refresh; the highlight follows its attempt (by id)."""
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        newcomer = await new_user(admin, "newcomer.arrives")
        phone = await enrolled_device(admin, backend.url, newcomer.id)
        await phone.aclose()
    service = ProtectClient(backend.url, backend.key(Role.SERVICE))
    app = console_app(backend)
    opened = spy_on_open_user(app)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(app, pilot)
        burst(app, ["down", "down", "down"])  # typed ahead, no pauses
        await wait_for(lambda: screen.table.cursor_row == 3)
        chosen = screen.table.row_at(3)
        assert chosen is not None and chosen.userId != newcomer.id

        # New attempts arrive; the refresh loop runs (no key pressed) and shows them on top...
        created = [await service.create_push(newcomer.id, f"app-{n}") for n in range(2)]
        await wait_for(lambda: screen.table.row_at(0) is not None and screen.table.row_at(0).id == created[-1].id)
        await pilot.pause()
        # ...and the highlight is still on the attempt the admin chose, now two rows lower.
        assert screen.table.cursor_row == 5
        assert screen.table.row_at(screen.table.cursor_row).id == chosen.id
        lines = table_lines(screen.table)
        assert "newcomer.arrives" in lines[1], "the view stays at the top: new attempts are seen"
        refreshes = screen.refreshes
        await wait_for(lambda: screen.refreshes > refreshes + 1)  # more refreshes, nothing new: it stays
        assert screen.table.row_at(screen.table.cursor_row).id == chosen.id

        burst(app, ["enter"])
        await wait_for(lambda: opened == [chosen.userId])
    await service.aclose()


async def test_started_during_an_outage_then_r_loads_everything(backend) -> None:
    """Item 7: no `loading…` forever beside the banner; after the service is back, `r` loads it all."""

    async with ProtectClient(backend.url, backend.admin_key) as admin:
        expected = (await admin.push_attempts(limit=1)).totalCount
    backend.stop()
    app = console_app(backend, retries=1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await wait_for(lambda: isinstance(app.screen, ActivityScreen))
        screen: ActivityScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: screen.error_visible and screen.load_failed, timeout=20)
        await wait_for(lambda: screen.panel.problem is not None, timeout=20)
        await pilot.pause()
        drawn = "\n".join(table_lines(screen.table))
        assert "loading…" not in drawn and "not loaded" in drawn
        assert "not loaded" in screen.status_text

        backend.restart()
        burst(app, ["r"])
        await wait_for(lambda: table_loaded(screen.table) and screen.panel.checked, timeout=20)
        await wait_for(lambda: not screen.error_visible and "updated" in screen.status_text)
        assert screen.table.total >= expected
        status = screen.status_text
        assert "not loaded" not in status and "loading" not in status.lower() and "updated" in status
        assert "checking" not in panel_text(screen)
    await app.api.aclose()


async def test_bombing_panel_shows_the_server_aggregate_last_attempt_and_a_stop(backend) -> None:
    """Item 8: the panel's figures are the server's aggregate (the user screen's too), with the last
    attempt's time; a stopped attack is marked with its end and who stopped it."""
    victim = await bomb(backend, "victim.aggregate", blocked=8)
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        stats = await admin.push_stats(victim.id)
    assert stats.blocked >= 8

    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(app, pilot)
        await wait_for(lambda: screen.panel.suspect(victim.id) is not None)
        suspect = screen.panel.suspect(victim.id)
        assert (suspect.blocked, suspect.denied, suspect.fraud) == (stats.blocked, stats.denied, stats.fraud)
        assert suspect.last == stats.lastAttemptAt and not suspect.stopped
        line = next(text for text in panel_text(screen).splitlines() if "victim.aggregate" in text)
        assert f"{stats.blocked} blocked" in line and re.search(r"last \d+s ago", line)

        # Stopped elsewhere (the CLI, the user screen): the next refresh marks it.
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            result = await admin.block_push(victim.id, minutes=30)
        burst(app, ["r"])
        await wait_for(lambda: screen.panel.suspect(victim.id) is not None and screen.panel.suspect(victim.id).stopped)
        await pilot.pause()
        until = result.blockedUntil.astimezone().strftime("%H:%M")
        assert f"push blocked until {until} by test-admin" in panel_text(screen)
        assert "1 stopped" in panel_text(screen)


async def test_stop_attack_from_the_panel_as_helpdesk_then_lift(backend) -> None:
    """Item 17: `X` on the highlighted suspect: one confirmation naming them (15 minutes, cancel pending,
    biometric off by default); the stop shows in the panel; `X` again offers Lift block."""
    from textual.widgets import Checkbox, Input

    from console.tui.modals.confirm import ConfirmScreen
    from console.tui.modals.stop_attack import StopAttackScreen

    victim = await bomb(backend, "victim.stopme")
    service = ProtectClient(backend.url, backend.key(Role.SERVICE))
    app = console_app(backend, backend.key(Role.HELPDESK, "desk-anna"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(app, pilot)
        await wait_for(lambda: screen.panel.suspect(victim.id) is not None and app.whoami is not None)
        index = next(i for i, s in enumerate(screen.panel.suspects) if s.user_id == victim.id)
        await wait_for(lambda: "X stops" in panel_text(screen))  # helpdesk may stop attacks: the hint says how

        # Cancelled: nothing changes.
        burst(app, ["b", *["down"] * index, "X"])
        await wait_for(lambda: isinstance(app.screen, StopAttackScreen))
        modal: StopAttackScreen = app.screen  # type: ignore[assignment]
        assert "Stop the push attack on victim.stopme?" in str(modal.query_one("#stop-title").content)
        assert modal.query_one("#stop-minutes", Input).value == "15"
        assert modal.query_one("#stop-cancel-pending", Checkbox).value is True
        assert modal.query_one("#stop-biometric", Checkbox).value is False
        await wait_for(lambda: ready(modal) and modal.focused.id == "cancel")  # Cancel has focus
        burst(app, ["n"])
        await wait_for(lambda: app.screen is screen)
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            assert (await admin.push_stats(victim.id)).pushBlock is None

        # Confirmed: pending push cancelled, new pushes refused, the panel says who stopped it until when.
        burst(app, ["X"])
        await wait_for(lambda: isinstance(app.screen, StopAttackScreen) and ready(app.screen))
        burst(app, ["y"])  # Cancel has focus; `y` is the answer
        await wait_for(lambda: screen.panel.suspect(victim.id) is not None and screen.panel.suspect(victim.id).stopped)
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            stats = await admin.push_stats(victim.id)
        assert stats.pushBlock is not None and stats.pushBlock.blockedBy == "desk-anna" and stats.pending == 0
        minutes = (stats.pushBlock.blockedUntil - stats.pushBlock.blockedAt).total_seconds() / 60
        assert 14 <= minutes <= 16
        with pytest.raises(RateLimited):
            await service.create_push(victim.id, "vpn")
        await wait_for(lambda: "by desk-anna" in panel_text(screen))
        until = stats.pushBlock.blockedUntil.astimezone().strftime("%H:%M")
        assert f"push blocked until {until} by desk-anna" in panel_text(screen)

        # `X` on a stopped user: Lift block (the footer says so).
        await wait_for(lambda: screen.focused is screen.panel.option_list)
        await wait_for(lambda: "Lift block" in footer_labels(screen))
        burst(app, ["X"])
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen) and ready(app.screen))
        assert "Lift the push block on victim.stopme" in str(app.screen.query_one("#confirm-title").content)
        burst(app, ["y"])
        await wait_for(
            lambda: screen.panel.suspect(victim.id) is not None and not screen.panel.suspect(victim.id).stopped
        )
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            assert (await admin.push_stats(victim.id)).pushBlock is None
        await service.create_push(victim.id, "vpn")  # pushes go through again
    await service.aclose()


async def test_stop_attack_key_says_why_it_cannot_act(make_backend) -> None:
    """Item 11: `b` with nobody to look at and `X` for a read-only key say why in a toast."""
    backend = make_backend(users=0)
    await bomb(backend, "victim.readonly")
    app = console_app(backend, backend.key(Role.READONLY))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(app, pilot)
        await wait_for(lambda: screen.panel.checked and app.whoami is not None)
        assert "X stops" not in panel_text(screen) and "X lifts" not in panel_text(screen)  # no key it lacks
        burst(app, ["b", "X"])
        await wait_for(lambda: any("cannot" in t for t in toasts(app)))
        assert not isinstance(app.screen, ConfirmScreen | StopAttackScreenType())

    empty = make_backend(users=0)
    app = console_app(empty)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(app, pilot)
        await wait_for(lambda: screen.panel.checked)
        burst(app, ["b"])
        await wait_for(lambda: any("No users with 5+ blocked or denied pushes" in t for t in toasts(app)))
        assert screen.table.has_focus


def StopAttackScreenType():
    from console.tui.modals.stop_attack import StopAttackScreen

    return StopAttackScreen


async def test_b_then_escape_returns_to_the_attempts_then_escape_goes_back(backend) -> None:
    """Item 12: Esc in the bombing panel goes back one level (the attempts), not to Users."""
    await bomb(backend, "victim.escape")
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(app, pilot)
        await wait_for(lambda: bool(screen.panel.suspects))
        burst(app, ["b", "escape"])
        await wait_for(lambda: screen.table.has_focus)
        await pilot.pause()
        assert app.screen is screen
        burst(app, ["escape"])
        await wait_for(lambda: app.screen is not screen)
        assert app.current_mode == "users"


async def test_two_long_usernames_read_apart_at_80_columns(backend) -> None:
    """Item 9: the user column comes first and wide enough to tell apart two users sharing a long prefix."""
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        users = [await new_user(admin, f"christopher.hernandez{n}") for n in (7, 8)]
        for user in users:
            phone = await enrolled_device(admin, backend.url, user.id)
            await phone.aclose()
    async with ProtectClient(backend.url, backend.key(Role.SERVICE)) as service:
        for user in users:
            await service.create_push(user.id, "VPN")
    app = console_app(backend)
    async with app.run_test(size=SMALL) as pilot:
        screen = await open_activity(app, pilot)
        await pilot.pause()
        lines = table_lines(screen.table)
        assert lines[0].startswith("User")
        assert lines[1].startswith("christopher.hernandez8 ") and lines[2].startswith("christopher.hernandez7 ")
        for column in ("Time", "Status", "Resource"):
            assert column in lines[0]
