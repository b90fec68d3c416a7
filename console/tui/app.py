"""The Protect Console application: modes, global keys, identity and the shared API client."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from textual import events, on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import CommandListItem, CommandPalette, SearchIcon
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.widget import AwaitMount

from ..client import ApiError, ProtectClient, WarmStart
from ..config import ConnectionProfile
from ..models import ROLE_PERMISSIONS, Permission, WhoAmI
from ..safe_text import printable
from .commands import ConsoleCommands
from .screens.base import ConsoleScreen, describe_action
from .screens.users import UsersScreen
from .startup import SETTLE_AFTER, settle_memory
from .tabs import HOME, TABS, Tab


def _lazy_screen(tab: Tab) -> Callable[[], Screen[Any]]:
    """A MODES factory importing the tab's screen on first use: start-up loads the first screen only."""

    def make() -> Screen[Any]:
        screen_class: type[Screen[Any]] = getattr(
            importlib.import_module(f"{__package__}.screens.{tab.module}"), tab.screen_class
        )
        return screen_class()

    return make


class ProtectConsoleApp(App[None]):
    """Full-screen admin console over one backend profile."""

    CSS_PATH = "app.tcss"
    TITLE = "Protect Console"

    # The first screen is imported with the app; the others on first use.
    MODES = {tab.mode: UsersScreen if tab.mode == HOME else _lazy_screen(tab) for tab in TABS}
    DEFAULT_MODE = HOME

    COMMANDS = App.COMMANDS | {ConsoleCommands}

    BINDINGS = [
        *(Binding(tab.key, f"show_screen('{tab.mode}')", tab.label, show=False) for tab in TABS),
        Binding("question_mark", "help", "Help"),
        Binding("escape", "back", "Back", show=False),
        Binding("q", "quit", "Quit"),
    ]

    whoami: reactive[WhoAmI | None] = reactive(None, init=False)

    def __init__(
        self,
        profile: ConnectionProfile,
        *,
        open_user: str | None = None,
        client: ProtectClient | None = None,
        warm: WarmStart | None = None,
    ) -> None:
        super().__init__()
        self.profile = profile
        self._owns_client = client is None
        # ``warm``: the first screen's requests, already sent by the CLI while this module loaded.
        self.api: ProtectClient = client or ProtectClient(
            profile.url, profile.api_key, warm=warm, timeout=profile.timeout
        )
        self._open_user_ref = open_user
        # Known before the first screen is composed when the warm start has it: no rebinding, no second
        # footer and header later (set_reactive: there is nothing to tell yet).
        me = self.api.whoami_if_answered()
        if me is not None:
            self.set_reactive(ProtectConsoleApp.whoami, me)

    # ------------------------------------------------------------ identity
    @property
    def readonly(self) -> bool:
        """Read-only by profile, or because the key's role may change nothing."""
        if self.profile.readonly:
            return True
        return self.whoami is not None and not any(self.can(p) for p in Permission if p != Permission.READ)

    def can(self, permission: Permission) -> bool:
        """Whether this profile and key may do ``permission`` (unknown until whoami answers)."""
        if permission == Permission.READ:
            return True
        if self.profile.readonly or self.whoami is None:
            return False
        granted = set(self.whoami.permissions) or ROLE_PERMISSIONS.get(self.whoami.role, frozenset())
        return permission in granted

    @work(exclusive=True, group="whoami", exit_on_error=False)
    async def load_whoami(self) -> None:
        try:
            me = await self.api.whoami()
        except ApiError as exc:
            self.report_error(exc, retry=self.load_whoami)
            return
        self.whoami = me

    def watch_whoami(self) -> None:
        # Actions appear once we know what the key may do.
        for screen in self.screen_stack:
            screen.refresh_bindings()

    # ------------------------------------------------------------ lifecycle
    def on_mount(self) -> None:
        if self.profile.theme in self.available_themes:
            self.theme = self.profile.theme
        if self.whoami is None:
            self.load_whoami()
        if not self.is_headless:  # a terminal session (tests run headless, many apps to a process)
            self.set_timer(SETTLE_AFTER, settle_memory)
        if self._open_user_ref:
            self.open_user(self._open_user_ref)

    async def on_unmount(self) -> None:
        if self._owns_client:
            await self.api.aclose()

    # ------------------------------------------------------------ navigation
    def open_user(self, user_id: str) -> None:
        """Push the detail screen of a user given by id, email or username."""
        from .screens.user_detail import UserDetailScreen

        self.push_screen(UserDetailScreen(user_id))

    def report_error(self, exc: BaseException, retry: Callable[[], object] | None = None) -> None:
        """Route an error to the nearest console screen's banner (a toast if there is none)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, ConsoleScreen):
                screen.report_error(exc, retry)
                return
        self.notify(str(exc), severity="error", markup=False)

    def _modal_open(self) -> bool:
        return isinstance(self.screen, ModalScreen)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Global keys stay out of the way while a modal (confirm, prompt, palette) is up.
        # The palette too: its actions are the screen's, and opening it over a question let that question be
        # answered while it was not on top (its dismiss then popped the palette and answered twice).
        return not (
            action in ("switch_mode", "show_screen", "help", "back", "quit", "command_palette") and self._modal_open()
        )

    # ------------------------------------------------------------ keys typed ahead
    async def on_event(self, event: events.Event) -> None:
        # Textual forwards a key to the focused widget and runs the non-priority bindings only when
        # it bubbles back up to the app, by which time the keys typed after it (one terminal read)
        # have already been forwarded to the *old* focus: `1 / z o e` sent `zoe` to the table, not
        # to the search box `/` focused. A key that a binding handles is run here, in arrival order,
        # before the next key is routed; keys the focused widget consumes (text in an Input) are
        # left out of the binding chain by Textual and still go to the widget.
        if isinstance(event, events.Key) and not event.is_forwarded:
            if not self._is_running_keys():
                return  # a key still queued while the console shuts down: nothing to give it to
            if self.screen.maximized is None or event.key != "escape":
                if not self.app_focus:
                    self.app_focus = True
                if await App._check_bindings(self, event.key, priority=True):
                    return
                if await App._check_bindings(self, event.key):
                    return
        await super().on_event(event)

    def _is_running_keys(self) -> bool:
        try:
            self.screen  # noqa: B018 - raises while there is no screen yet (or any more)
        except Exception:  # noqa: BLE001
            return False
        return self.is_running

    # ------------------------------------------------------------ keys that cannot act
    async def _check_bindings(self, key: str, priority: bool = False) -> bool:
        # Textual runs the first binding of ``key`` whose check_action allows it; when none does, the
        # key would do nothing at all. A binding hidden because its action cannot act now (a reason
        # from ``action_unavailable``, or greyed by check_action) says why instead: never silently nothing.
        if await super()._check_bindings(key, priority):
            return True
        if priority:
            return False
        return self.explain_unavailable_key(key)

    def explain_unavailable_key(self, key: str) -> bool:
        """Toast why ``key`` cannot act here now; False when no binding of the key applies at all."""
        try:
            chain = self.screen._modal_binding_chain
        except Exception:  # noqa: BLE001 - no screen (shutting down)
            return False
        for namespace, bindings in chain:
            for binding in bindings.key_to_bindings.get(key, ()):
                if binding.priority:
                    continue
                target, name, parameters = self._parse_action(binding.action, namespace)
                unavailable = getattr(target, "action_unavailable", None)
                reason = unavailable(name) if callable(unavailable) else None
                if reason is None and target.check_action(name, parameters) is None:
                    what = describe_action(target, name)
                    reason = f"{what[:1].upper()}{what[1:]}: not available right now."
                if reason:
                    self.notify(
                        printable(reason, max_length=300), title="Not now", severity="warning", timeout=4, markup=False
                    )
                    return True
        return False

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        # Of Textual's own palette entries only the theme applies to this console: Keys (a
        # widget-help panel), Screenshot (an SVG in the current directory), Maximize and Quit
        # (`q`, in the footer) are either noise or do nothing useful here.
        yield SystemCommand("Theme", "Change the console's colours for this session", self.action_change_theme)

    def action_command_palette(self) -> None:
        from .widgets.palette import GuardedCommandPalette

        if self.use_command_palette and not CommandPalette.is_open(self):  # type: ignore[arg-type]  # App[object] there
            self.push_screen(GuardedCommandPalette(id="--command-palette"))

    def search_commands(
        self, commands: Sequence[CommandListItem], placeholder: str = "Search for commands…"
    ) -> AwaitMount:
        # Textual's own palettes (system commands, themes) get the same guard as ours.
        from textual.command import SimpleProvider

        from .widgets.palette import GuardedCommandPalette

        # An instance where the annotation says a class: Textual's own search_commands does the same.
        providers = [SimpleProvider(self.screen, list(commands))]
        return self.push_screen(GuardedCommandPalette(providers=providers, placeholder=placeholder))  # type: ignore[arg-type]

    def search_themes(self) -> None:
        from textual.theme import ThemeProvider

        from .widgets.palette import GuardedCommandPalette

        self.push_screen(GuardedCommandPalette(providers=[ThemeProvider], placeholder="Search for themes…"))

    @on(CommandPalette.Opened)
    def _plain_palette_icon(self) -> None:
        # Textual's magnifier (🔎) is an emoji: an empty box on terminals without an emoji font.
        for icon in self.screen.query(SearchIcon):
            icon.icon = ">"

    def action_back(self) -> None:  # type: ignore[override]  # sync: screens call it and go on at once
        """One level back: inside the screen first (focus back to its table, a search cleared),
        then close the screen on top, then return to Users."""
        screen = self.screen
        if isinstance(screen, ConsoleScreen) and screen.escape_one_level():
            screen.refresh_bindings()
            return
        if len(self.screen_stack) > 1:
            self.pop_screen()
        elif self.current_mode != HOME:
            self.action_show_screen(HOME)

    def action_show_screen(self, mode: str) -> None:
        """A number key: show that mode's list, never what was opened over it earlier.

        ``switch_mode`` keeps one stack per mode and would bring back whatever was pushed in it
        last (a user's screen with its change keys armed). The mode's stack is cut to its base
        screen first, the current mode's included (``1`` on a user opened from Users is the list).
        Keys typed ahead after the number key land on the list: the stack changes at once.
        """
        if mode not in self._modes or self._modal_open():
            return
        stack = self._screen_stacks.get(mode)
        if stack and len(stack) > 1:
            stale = stack[1:]
            del stack[1:]
            for screen in stale:
                screen._pop_result_callback()  # nobody is waiting for a closed screen's answer
            if mode == self.current_mode:
                stack[0].post_message(events.ScreenResume())
                self.screen_change_signal.publish(stack[0])

            async def remove_stale() -> None:
                for screen in reversed(stale):
                    await self._replace_screen(screen)

            self.call_next(remove_stale)
        if mode != self.current_mode:
            self.switch_mode(mode)
        base = self._screen_stacks[mode][0]
        main = base.main_widget() if isinstance(base, ConsoleScreen) else None
        if main is not None and main.focusable and base.focused is not main:
            base.set_focus(main)

    def action_help(self) -> None:
        from .modals.help import HelpScreen

        self.push_screen(HelpScreen(self.screen))
