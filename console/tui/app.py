"""The Protect Console application: modes, global keys, identity and the shared API client."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

from rich.text import Text
from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.command import CommandPalette, SearchIcon
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Static

from ..client import ApiError, ProtectClient
from ..config import ConnectionProfile
from ..models import ROLE_PERMISSIONS, Permission, WhoAmI
from .commands import ConsoleCommands
from .screens.base import ConsoleScreen
from .screens.users import UsersScreen
from .widgets.header import TABS


class PlaceholderScreen(ConsoleScreen):
    """Stands in for a screen whose module is not there (yet), so the rest still runs."""

    def __init__(self, title: str, reason: str) -> None:
        self.TITLE = title
        self._reason = reason
        super().__init__()

    def compose_body(self) -> Iterable[Widget]:
        yield Static(Text(f"{self.TITLE}: not available in this build ({self._reason})."), markup=False)


def _lazy_screen(module: str, class_name: str, title: str) -> Callable[[], Screen]:
    """A MODES factory importing the screen on first use (keeps start-up light)."""

    def make() -> Screen:
        full_name = f"{__package__}.screens.{module}"
        try:
            screen_class = getattr(importlib.import_module(full_name), class_name)
        except ModuleNotFoundError as exc:
            if exc.name != full_name:
                raise  # a real import bug inside the module: let it show
            return PlaceholderScreen(title, "module missing")
        except AttributeError:
            return PlaceholderScreen(title, f"{class_name} missing")
        return screen_class()

    return make


class ProtectConsoleApp(App[None]):
    """Full-screen admin console over one backend profile."""

    CSS_PATH = "app.tcss"
    TITLE = "Protect Console"

    MODES = {
        "users": UsersScreen,
        "activity": _lazy_screen("activity", "ActivityScreen", "Activity"),
        "settings": _lazy_screen("settings", "SettingsScreen", "Settings"),
        "privacy": _lazy_screen("privacy", "PrivacyScreen", "Privacy"),
        "audit": _lazy_screen("audit", "AuditScreen", "Audit"),
    }
    DEFAULT_MODE = "users"

    COMMANDS = App.COMMANDS | {ConsoleCommands}

    BINDINGS = [
        *(Binding(key, f"switch_mode('{mode}')", label, show=False) for key, mode, label in TABS),
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
    ) -> None:
        super().__init__()
        self.profile = profile
        self._owns_client = client is None
        self.api: ProtectClient = client or ProtectClient(profile.url, profile.api_key)
        self._open_user_ref = open_user

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
        self.load_whoami()
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
        if action in ("switch_mode", "help", "back", "quit") and self._modal_open():
            return False
        return True

    def action_command_palette(self) -> None:
        from .widgets.palette import GuardedCommandPalette

        if self.use_command_palette and not CommandPalette.is_open(self):
            self.push_screen(GuardedCommandPalette(id="--command-palette"))

    def search_commands(self, commands, placeholder: str = "Search for commands…"):  # noqa: ANN001, ANN201
        # Textual's own palettes (system commands, themes) get the same guard as ours.
        from textual.command import SimpleProvider

        from .widgets.palette import GuardedCommandPalette

        return self.push_screen(
            GuardedCommandPalette(providers=[SimpleProvider(self.screen, commands)], placeholder=placeholder)
        )

    def search_themes(self) -> None:
        from textual.theme import ThemeProvider

        from .widgets.palette import GuardedCommandPalette

        self.push_screen(GuardedCommandPalette(providers=[ThemeProvider], placeholder="Search for themes…"))

    @on(CommandPalette.Opened)
    def _plain_palette_icon(self) -> None:
        # Textual's magnifier (🔎) is an emoji: an empty box on terminals without an emoji font.
        for icon in self.screen.query(SearchIcon):
            icon.icon = ">"

    def action_back(self) -> None:
        if len(self.screen_stack) > 1:
            self.pop_screen()
        elif self.current_mode != "users":
            self.switch_mode("users")

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        self.push_screen(HelpScreen(self.screen))
