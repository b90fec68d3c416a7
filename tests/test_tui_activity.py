"""Activity screen: live push attempts, pause, and the push-bombing panel, over the real service."""

from __future__ import annotations

import time

import pytest
from textual.widgets import OptionList

from console.client import ProtectClient, RateLimited
from console.models import Role
from console.tui.app import ProtectConsoleApp
from console.tui.screens.activity import ActivityScreen

from .helpers import enrolled_device, new_user, wait_for
from .tui_helpers import SIZE, console_app, open_screen, table_lines, table_loaded


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
