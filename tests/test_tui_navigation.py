"""The console frame: keys that cannot act say why, `r` reloads, number keys show their list, Esc goes back
one level, the footer follows focus, the palette offers what applies. Real service, real app under Pilot;
key flows are typed ahead (``burst``), as a terminal delivers them."""

from __future__ import annotations

from textual.binding import Binding

from console.models import Permission, Role
from console.tui.screens.base import ConsoleScreen
from console.tui.widgets.footer import ConsoleFooter

from .helpers import wait_for
from .tui_helpers import SIZE, burst, console_app, toasts


class ProbeScreen(ConsoleScreen):
    """A console screen with one permissioned action and one with a state reason."""

    TITLE = "Probe"
    ACTION_PERMISSIONS = {"poke": Permission.USERS_WRITE}
    BINDINGS = [Binding("P", "poke", "Poke"), Binding("W", "wave", "Wave")]

    def __init__(self) -> None:
        super().__init__()
        self.pokes = 0
        self.waves = 0
        self.reloads = 0
        self.someone_there = False

    def action_unavailable(self, action: str) -> str | None:
        if action == "wave" and not self.someone_there:
            return "Nobody here to wave at"
        return super().action_unavailable(action)

    def action_poke(self) -> None:
        self.pokes += 1

    def action_wave(self) -> None:
        self.waves += 1

    def reload_data(self) -> None:
        self.reloads += 1


def footer_keys(screen: ConsoleScreen) -> list[str]:
    return screen.query_one(ConsoleFooter).shown_keys


async def push_probe(app, pilot) -> ProbeScreen:
    await wait_for(lambda: app.whoami is not None)
    probe = ProbeScreen()
    await app.push_screen(probe)
    await wait_for(lambda: app.screen is probe)
    await pilot.pause()
    return probe


async def test_an_action_the_role_lacks_is_hidden_and_its_key_says_the_role_cannot(backend) -> None:
    app = console_app(backend, backend.key(Role.HELPDESK, "desk-anna"))
    async with app.run_test(size=SIZE) as pilot:
        probe = await push_probe(app, pilot)
        assert "P" not in footer_keys(probe)
        burst(app, ["P"])
        await wait_for(lambda: any("helpdesk cannot poke" in t for t in toasts(app)))
        assert probe.pokes == 0


async def test_a_read_only_profile_names_itself_in_the_toast(backend) -> None:
    app = console_app(backend, readonly=True, name="prod-ro")
    async with app.run_test(size=SIZE) as pilot:
        probe = await push_probe(app, pilot)
        assert "P" not in footer_keys(probe)
        burst(app, ["P"])
        await wait_for(lambda: any("Read-only profile 'prod-ro'" in t for t in toasts(app)))
        assert probe.pokes == 0


async def test_a_state_reason_hides_the_key_and_is_toasted_then_the_key_works_once_it_is_gone(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        probe = await push_probe(app, pilot)
        assert "P" in footer_keys(probe)  # admin: may poke
        assert "W" not in footer_keys(probe)
        burst(app, ["W", "P"])
        await wait_for(lambda: probe.pokes == 1 and any("Nobody here to wave at" in t for t in toasts(app)))
        assert probe.waves == 0
        probe.someone_there = True
        probe.refresh_bindings()
        await wait_for(lambda: "W" in footer_keys(probe))
        burst(app, ["W"])
        await wait_for(lambda: probe.waves == 1)


async def test_r_always_reloads_and_after_an_error_reloads_whoami_too(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        probe = await push_probe(app, pilot)
        assert "r" in footer_keys(probe)
        burst(app, ["r"])
        await wait_for(lambda: probe.reloads == 1)
