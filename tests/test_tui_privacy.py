"""Privacy screen: summary, device table and the opted-out filter, over the real service."""

from __future__ import annotations

from console.client import ProtectClient
from console.tui.app import ProtectConsoleApp
from console.tui.screens.privacy import PrivacyScreen

from .helpers import enrolled_device, new_user, wait_for
from .tui_helpers import SIZE, console_app, open_screen, table_lines


async def open_privacy(app: ProtectConsoleApp, pilot) -> PrivacyScreen:
    return await open_screen(app, pilot, "4", PrivacyScreen, lambda s: s.summary is not None and s.table.total is not None)


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
