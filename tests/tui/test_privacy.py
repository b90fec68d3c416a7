"""Privacy screen: summary, device table and the opted-out filter, over the real service."""

from __future__ import annotations

from console.client import ProtectClient
from console.tui.app import ProtectConsoleApp
from console.tui.screens.privacy import PrivacyScreen
from tests.helpers import enrolled_device, new_user, wait_for
from tests.tui.tui_helpers import (
    SIZE,
    burst,
    console_app,
    footer_labels,
    open_screen,
    table_lines,
    table_loaded,
    text_of,
)


async def open_privacy(app: ProtectConsoleApp, pilot) -> PrivacyScreen:
    return await open_screen(
        app, pilot, "4", PrivacyScreen, lambda s: s.summary is not None and s.table.total is not None
    )


async def test_opted_out_filter_shows_only_opted_out_devices(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        expected = await admin.privacy_summary()
    assert 0 < expected.optedOut < expected.devices, "the seed must have both kinds of device"

    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_privacy(app, pilot)
        assert screen.table.total == expected.devices
        summary = str(screen.query_one("#privacy-summary").content)
        share = expected.optedOut / expected.devices * 100
        assert f"{expected.devices:,}" in summary and f"{expected.optedOut:,} opted out ({share:.1f}%)" in summary
        note = str(screen.query_one("#privacy-note").content)
        assert "Never collected: user information" in note and "Settings > Privacy" in note and "never stored" in note

        await pilot.press("o")
        await wait_for(lambda: screen.table.total == expected.optedOut and screen.table.row_at(0) is not None)
        assert screen.opted_out_only
        rows = [screen.table.row_at(i) for i in range(min(expected.optedOut, screen.table.page_size))]
        assert rows and all(row is not None and row.privacy.diagnosticsOptOut for row in rows)
        visible = [line for line in table_lines(screen.table)[1:] if line.strip()]
        assert visible and all(line.startswith("opted out") for line in visible)
        assert f"{expected.optedOut:,} opted-out" in str(screen.query_one("#privacy-filter").content)

        await pilot.press("o")  # back to every device
        await wait_for(lambda: screen.table.total == expected.devices)


async def test_device_model_and_user_render_literally(backend) -> None:
    """A hostile device model and username show as text: no markup, no escape sequences."""
    from console.models import DeviceInfo

    hostile_model = "[@click=app.quit]Pixel[/] \x1b]0;pwned\x07"
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "aaa[b]x[/b]")
        device = DeviceInfo(make="Goo[/]gle", model=hostile_model, os="Android", osVersion="14", appVersion="1.0")
        phone = await enrolled_device(admin, backend.url, user.id, device)
        await phone.settings(diagnostics_opt_out=True)
        await phone.aclose()

    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_privacy(app, pilot)
        await pilot.press("o")
        await wait_for(lambda: screen.opted_out_only and screen.table.row_at(0) is not None)
        # Find our device in the loaded rows and draw it.
        index = next(
            i for i in range(screen.table.total) if screen.table.row_at(i) and screen.table.row_at(i).user.id == user.id
        )
        screen.table.cursor_row = index
        await pilot.pause()
        text = "\n".join(table_lines(screen.table))
        assert "aaa[b]x[/b]" in text
        assert "Goo[/]gle [@click" in text
        assert "\x1b" not in text and "\x07" not in text
        assert app.is_running


# ------------------------------------------------------------------ issue 6, second pass


async def test_enter_opens_the_rows_user_and_the_filter_in_force_is_shown(backend) -> None:
    """Item 13: Enter on a Privacy row opens its user; the status line names the filter that is on;
    Esc shows every device again first, then goes back."""
    app = console_app(backend)
    opened: list[str] = []
    real_open_user = app.open_user

    def spy(user_id: str) -> None:
        opened.append(user_id)
        real_open_user(user_id)

    app.open_user = spy  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_privacy(app, pilot)
        assert "filter: none" in text_of(screen, "#privacy-filter")
        burst(app, ["o"])
        await wait_for(lambda: screen.opted_out_only and table_loaded(screen.table))
        burst(app, ["down"])
        await wait_for(lambda: screen.table.cursor_row == 1)
        await wait_for(lambda: "filter: opted out" in text_of(screen, "#privacy-filter"))
        await wait_for(lambda: "Opted out: on" in footer_labels(screen))  # the footer says it too
        assert screen.query_one("#privacy-position").label.startswith("opted-out devices 2/")
        row = screen.table.row_at(1)
        assert row.privacy.diagnosticsOptOut
        burst(app, ["enter"])
        await wait_for(lambda: opened == [row.user.id])
        await wait_for(lambda: app.screen.__class__.__name__ == "UserDetailScreen")
        burst(app, ["escape"])
        await wait_for(lambda: app.screen is screen)
        burst(app, ["escape"])  # one level: every device again, still on Privacy
        await wait_for(lambda: not screen.opted_out_only and "filter: none" in text_of(screen, "#privacy-filter"))
        assert app.screen is screen


async def test_started_during_an_outage_then_r_loads_everything(backend) -> None:
    """Item 7: `not loaded` beside the banner (never `loading…` for ever); `r` after the service is back loads
    the summary and the devices."""
    from console.client import ProtectClient as Client

    async with Client(backend.url, backend.admin_key) as admin:
        expected = await admin.privacy_summary()
    backend.stop()
    app = console_app(backend, retries=1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await wait_for(lambda: isinstance(app.screen, PrivacyScreen))
        screen: PrivacyScreen = app.screen  # type: ignore[assignment]
        await wait_for(lambda: screen.error_visible and screen.load_failed, timeout=20)
        await wait_for(lambda: "not loaded" in str(screen.query_one("#privacy-summary").content), timeout=20)
        await pilot.pause()
        drawn = "\n".join(table_lines(screen.table))
        assert "loading…" not in drawn and "not loaded" in drawn

        backend.restart()
        burst(app, ["r"])
        await wait_for(lambda: screen.summary is not None and table_loaded(screen.table), timeout=20)
        await wait_for(lambda: not screen.error_visible)
        assert screen.table.total == expected.devices
        assert f"{expected.devices:,}" in str(screen.query_one("#privacy-summary").content)
    await app.api.aclose()
