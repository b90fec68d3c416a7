"""The console frame: keys that cannot act say why, `r` reloads, number keys show their list, Esc goes back
one level, the footer follows focus, the palette offers what applies. Real service, real app under Pilot;
key flows are typed ahead (``burst``), as a terminal delivers them."""

from __future__ import annotations

from textual.binding import Binding
from textual.command import CommandList, CommandPalette
from textual.screen import ModalScreen

from console.client import ProtectClient
from console.config import ConnectionProfile
from console.models import Permission, Role
from console.tui.app import ProtectConsoleApp
from console.tui.modals.confirm import ConfirmScreen
from console.tui.modals.help import HelpScreen
from console.tui.screens.activity import ActivityScreen
from console.tui.screens.base import ConsoleScreen
from console.tui.screens.user_detail import UserDetailScreen
from console.tui.screens.users import UsersScreen
from console.tui.widgets.error_banner import ErrorBanner
from console.tui.widgets.footer import ConsoleFooter
from console.tui.widgets.header import ConsoleHeader
from tests.helpers import new_user, wait_for
from tests.tui.tui_helpers import SIZE, burst, console_app, detail_ready, open_screen, table_loaded, text_of, toasts


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


# ------------------------------------------------------------------ number keys (items 1 and 6b)


async def users_ready(app, pilot) -> UsersScreen:
    users = await open_screen(app, pilot, None, UsersScreen, lambda s: table_loaded(s.table))
    await wait_for(lambda: app.whoami is not None)
    return users


def in_any_stack(app, screen) -> bool:
    return any(screen in stack for stack in app._screen_stacks.values())


async def test_1_on_a_user_opened_from_users_shows_the_list_and_typed_ahead_keys_land_there(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        zoe = await new_user(admin, "zoe.navtest", first="Zoe", last="Navtest")
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        users = await users_ready(app, pilot)
        first = users.table.row_at(0)
        await pilot.press("enter")  # opens the highlighted user
        detail = await detail_ready(app, pilot)
        assert detail.user.id == first.id != zoe.id
        # As typed: the number key, then a search, no pauses.
        burst(app, ["1", "slash", *"zoe.navtest", "enter"])
        await wait_for(lambda: users.search_term == "zoe.navtest" and users.table.total == 1)
        await wait_for(lambda: not in_any_stack(app, detail) and not detail.is_attached)
        assert users.table.row_at(0).id == zoe.id
        # Enter on a search with exactly one match opens it: then it is Zoe's screen, right over the list.
        await pilot.pause()
        if app.screen is not users:
            await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.user is not None)
            assert app.screen.user.id == zoe.id and app.screen_stack == [users, app.screen]
        shown = app.screen
        # The verify key that follows acts on the user on screen, never on the one left behind.
        burst(app, ["V"])
        await pilot.pause()
        assert not in_any_stack(app, detail)
        if isinstance(app.screen, ModalScreen):
            assert app.screen_stack[-2] is shown


async def test_2_after_a_user_opened_from_activity_shows_activity_not_the_stale_user(backend) -> None:
    """`2 b Enter` opened a user from Activity; `1` then a user from the palette; `2` showed the first user again."""
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        users = await users_ready(app, pilot)
        activity = await open_screen(app, pilot, "2", ActivityScreen)
        target = users.table.row_at(1)
        app.open_user(target.id)  # what Enter on an attempt or a suspect does
        stale = await detail_ready(app, pilot)
        burst(app, ["1", "2"])
        await wait_for(lambda: app.screen is activity)
        assert app._screen_stacks["activity"] == [activity]
        await wait_for(lambda: not in_any_stack(app, stale) and not stale.is_attached)
        # Its change keys are gone with it: U on Activity unenrolls nobody.
        burst(app, ["U"])
        await pilot.pause()
        assert app.screen is activity


async def test_a_number_key_is_ignored_under_a_modal(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        users = await users_ready(app, pilot)
        burst(app, ["question_mark", "2"])
        await wait_for(lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and app.current_mode == "users"
        burst(app, ["escape"])
        await wait_for(lambda: app.screen is users)


# ------------------------------------------------------------------ the footer under a modal (item 11)


async def test_under_a_confirmation_the_footer_shows_its_keys_not_the_screens(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = (await admin.list_users(filters=["mfaEnrollment.totpStatus:$eq:ENROLLED"], limit=1)).results[0]
    app = console_app(backend, open_user=user.id)
    async with app.run_test(size=SIZE) as pilot:
        detail = await detail_ready(app, pilot)
        footer = detail.query_one(ConsoleFooter)
        await wait_for(lambda: "T" in footer.shown_keys)
        burst(app, ["T"])  # Reset TOTP: a confirmation
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        confirm = app.screen
        await wait_for(lambda: footer.source is confirm)
        assert set(footer.shown_keys) == {"y", "n"}, footer.shown_keys  # n and Esc both cancel: one key shown
        # Cancel takes the focus when the modal mounts, which may come after the footer followed it.
        await wait_for(lambda: confirm.focused is not None and confirm.focused.id == "cancel")
        burst(app, ["n"])
        await wait_for(lambda: app.screen is detail)
        await wait_for(lambda: footer.source is detail and "T" in footer.shown_keys)
        assert "y" not in footer.shown_keys


# ------------------------------------------------------------------ Esc, one level at a time (item 12)


async def test_escape_goes_back_one_level_at_a_time(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        users = await users_ready(app, pilot)
        activity = await open_screen(app, pilot, "2", ActivityScreen)
        table = activity.main_widget()
        await wait_for(lambda: activity.focused is table)
        focus_history: list = []
        activity.watch(activity, "focused", lambda widget: focus_history.append(widget), init=False)
        burst(app, ["b", "escape"])  # the bombing panel, then back: still on Activity, on its table
        await wait_for(lambda: len(focus_history) >= 2)
        assert focus_history[0] is not table and focus_history[-1] is table
        assert app.screen is activity
        burst(app, ["escape"])
        await wait_for(lambda: app.screen is users)
        # Users: the search box first gives the focus back to the list; the list stays.
        users_history: list = []
        users.watch(users, "focused", lambda widget: users_history.append(widget), init=False)
        burst(app, ["slash", "escape"])
        await wait_for(lambda: len(users_history) >= 2)
        assert users_history[-1] is users.table and app.screen is users


async def test_esc_back_is_in_the_footer_where_there_is_somewhere_to_go_back_to(backend) -> None:
    app = console_app(backend, open_user="nobody@nowhere.example")
    async with app.run_test(size=SIZE):
        await wait_for(lambda: isinstance(app.screen, UserDetailScreen) and app.screen.error_visible)
        detail = app.screen
        footer = detail.query_one(ConsoleFooter)
        await wait_for(lambda: "escape" in footer.shown_keys)
        burst(app, ["escape"])
        await wait_for(lambda: isinstance(app.screen, UsersScreen))
        users = app.screen
        await wait_for(lambda: table_loaded(users.table))
        assert "escape" not in users.query_one(ConsoleFooter).shown_keys  # nothing under the Users list


# ------------------------------------------------------------------ outage and a refused key (item 7)


async def test_after_an_outage_r_recovers_whoami_and_the_screen(backend) -> None:
    backend.stop()
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        users: UsersScreen = await open_screen(app, pilot, None, UsersScreen, lambda s: s.error_visible)
        await wait_for(lambda: users.table.total is None and app.whoami is None)
        backend.restart()
        burst(app, ["r"])
        await wait_for(lambda: app.whoami is not None and table_loaded(users.table), timeout=20)
        assert not users.error_visible
        assert "role: admin" in users.query_one(ConsoleHeader).identity_line().plain


async def test_a_refused_key_says_which_profile_and_how_to_fix_it(backend) -> None:
    profile = ConnectionProfile("prod", backend.url, "not-a-real-key", key_source="$PROD_PROTECT_KEY")
    app = ProtectConsoleApp(profile)
    async with app.run_test(size=SIZE) as pilot:
        users: UsersScreen = await open_screen(app, pilot, None, UsersScreen, lambda s: s.error_visible)
        banner = users.query_one(ErrorBanner)
        await wait_for(lambda: "401" in banner.message)
        assert "profile 'prod'" in banner.message and "PROTECT_CONSOLE_API_KEY" in banner.message
        assert "api_key_command" in banner.message and "key from $PROD_PROTECT_KEY" in banner.message
        await pilot.pause()
        shown = text_of(users, "#error-banner")
        assert "restart" in shown  # the whole fix is on screen, not cut off


# ------------------------------------------------------------------ the palette (items 5 and 15)


def palette_lines(app) -> list[str]:
    """The palette's command lines now ([] while it is not open or not composed yet)."""
    if not isinstance(app.screen, CommandPalette) or not app.screen.query(CommandList):
        return []
    options = app.screen.query_one(CommandList)
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


async def palette_prompts(app) -> list[str]:
    await wait_for(lambda: bool(palette_lines(app)))
    return palette_lines(app)


async def test_the_palette_offers_our_actions_and_screens_not_textuals_own(backend) -> None:
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await users_ready(app, pilot)
        burst(app, ["ctrl+p"])
        prompts = await palette_prompts(app)
        assert any(p.startswith("Go to Activity") for p in prompts), prompts
        assert any(p.startswith("Users: Search") for p in prompts), prompts
        assert any(p.startswith("Theme") for p in prompts), prompts
        for foreign in ("Keys", "Screenshot", "Maximize", "Quit"):
            assert not any(p.startswith(foreign) for p in prompts), (foreign, prompts)
        # Choosing a screen from it shows that screen's list.
        burst(app, [*"go to activity"])
        await wait_for(
            lambda: (
                palette_lines(app)[:1] == [p for p in palette_lines(app)[:1] if p.startswith("Go to Activity")] != []
            )
        )
        burst(app, ["enter", "enter"])  # a double Enter must not end the console (item 5)
        await wait_for(lambda: isinstance(app.screen, ActivityScreen))
        await pilot.pause()
        assert app.is_running and isinstance(app.screen, ActivityScreen)


async def test_the_palette_finds_a_user_with_statuses_spelled_as_the_console_does(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        await new_user(admin, "quinn.palette", first="Quinn", last="Palette")
    app = console_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await users_ready(app, pilot)
        burst(app, ["ctrl+p", *"quinn.palette"])
        await wait_for(lambda: any("Open user" in p for p in palette_lines(app)), timeout=15)
        prompts = palette_lines(app)
        line = next(p for p in prompts if "quinn.palette" in p)
        assert "TOTP · none" in line and "push · none" in line, line
        assert "not_enrolled" not in line.lower()


def test_the_profile_knows_where_its_key_came_from(tmp_path, monkeypatch) -> None:
    from console.config import ENV_API_KEY, load_profile

    monkeypatch.delenv(ENV_API_KEY, raising=False)
    config = tmp_path / "config.toml"
    config.write_text('[profiles.prod]\nurl = "http://127.0.0.1:9"\napi_key_env = "PROD_PROTECT_KEY"\n')
    monkeypatch.setenv("PROD_PROTECT_KEY", "secret-value")
    profile = load_profile("prod", url=None, readonly=None, config_path=config)
    assert profile.key_source == "$PROD_PROTECT_KEY" and "secret" not in profile.key_source
    monkeypatch.setenv(ENV_API_KEY, "other")
    assert load_profile("prod", url=None, readonly=None, config_path=config).key_source == f"${ENV_API_KEY}"


def test_the_tab_list_is_the_one_source_of_the_modes_and_number_keys() -> None:
    """The app's modes, its number keys and its home screen all come from console.tui.tabs, and every
    tab names a screen class that exists (a typo would show a placeholder instead of the screen)."""
    import importlib

    from console.tui.tabs import HOME, TABS

    assert list(ProtectConsoleApp.MODES) == [tab.mode for tab in TABS]
    assert ProtectConsoleApp.DEFAULT_MODE == HOME == TABS[0].mode
    number_keys = {
        binding.key: binding.action
        for binding in ProtectConsoleApp.BINDINGS
        if isinstance(binding, Binding) and binding.action.startswith("show_screen")
    }
    assert number_keys == {tab.key: f"show_screen('{tab.mode}')" for tab in TABS}
    for tab in TABS:
        module = importlib.import_module(f"console.tui.screens.{tab.module}")
        screen_class = getattr(module, tab.screen_class)
        assert issubclass(screen_class, ConsoleScreen) and tab.label == screen_class.TITLE
