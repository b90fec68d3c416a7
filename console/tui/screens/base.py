"""The frame every console screen shares: header, error banner, body, footer, and how keys behave.

How a screen uses it (the contract H4/H5/H6 code against):

- ``ACTION_PERMISSIONS = {"unenroll": Permission.DEVICES_UNENROLL, ...}``: action name -> the permission
  it needs. Without it the action is hidden from the footer, help and palette, and its key says in a
  toast that the role (or the read-only profile) cannot do it.
- ``action_unavailable(action) -> str | None``: why the action cannot act *now* (``"No push device to
  unenroll"``), or None. Override it for state reasons and ``return super().action_unavailable(action)``
  at the end. An action with a reason is not shown in the footer/help/palette; pressing its key shows
  the reason as a toast. Do not hide actions in ``check_action`` any more (it stays for bindings that
  simply do not apply, e.g. one of two ``A`` bindings: return False there only when another binding of
  the same key acts instead). Call ``self.refresh_bindings()`` when the state behind a reason changes.
- ``reload_data()``: fetch everything the screen shows again. ``r`` always calls it (after an error it
  also reloads the key's identity); every screen overrides it. Do not bind ``r`` yourself.
- ``escape_one_level() -> bool``: Esc asks the screen first. Return True when you went back one level
  inside the screen (a search box or panel with focus gave focus back to the main table, a search was
  cleared); False lets the frame go back (pop the screen, then return to Users). Do not bind Esc yourself.
- ``main_widget()``: the widget that Esc and a number key give focus back to (default: ``AUTO_FOCUS``).
- ``self.console_app``: the app, typed as :class:`ConsoleAppLike` (``api``, ``can``, ``open_user``, ...);
  Textual types ``self.app`` as a plain ``App``. Widgets and modals use ``console_app_of(self)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.message_pump import MessagePump
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from ...client import Unauthorized
from ...models import Permission
from ..tabs import HOME
from ..widgets.error_banner import ErrorBanner
from ..widgets.footer import ConsoleFooter
from ..widgets.header import ConsoleHeader
from ..widgets.virtual_table import VirtualTable

if TYPE_CHECKING:
    from ...client import ProtectClient
    from ...config import ConnectionProfile
    from ...models import WhoAmI
    from ..app import ProtectConsoleApp

T = TypeVar("T")


class ConsoleAppLike(Protocol):
    """What screens and widgets use of the console app beyond Textual's ``App``.

    :class:`~console.tui.app.ProtectConsoleApp` is the one implementation (mypy checks it below).
    """

    @property
    def api(self) -> ProtectClient: ...
    @property
    def profile(self) -> ConnectionProfile: ...
    @property
    def whoami(self) -> WhoAmI | None: ...
    @property
    def readonly(self) -> bool: ...
    def can(self, permission: Permission) -> bool: ...
    def open_user(self, user_id: str) -> None: ...
    def load_whoami(self) -> object: ...
    def report_error(self, exc: BaseException, retry: Callable[[], object] | None = None) -> None: ...
    def action_show_screen(self, mode: str) -> None: ...
    def action_help(self) -> None: ...
    def action_back(self) -> None: ...


def console_app_of(node: MessagePump) -> ConsoleAppLike:
    """The console app ``node`` runs in, typed (for widgets and modals; screens have ``console_app``)."""
    return cast("ConsoleAppLike", node.app)


if TYPE_CHECKING:

    def _implements(app: ProtectConsoleApp) -> ConsoleAppLike:
        return app  # mypy: the app has everything the protocol promises


# Actions the frame itself binds on every console screen: always available.
FRAME_ACTIONS = frozenset({"reload"})


def describe_action(node: Any, action: str) -> str:
    """The words a binding uses for ``action`` on ``node`` ("reset TOTP"), for toasts."""
    bindings = getattr(node, "_bindings", None)
    if bindings is not None:
        for _key, binding in bindings:
            name = binding.action.rsplit(".", 1)[-1].split("(", 1)[0]
            if name == action and (binding.tooltip or binding.description):
                words: str = binding.tooltip or binding.description
                return words[:1].lower() + words[1:] if words[1:2].islower() else words
    return action.replace("_", " ")


class ConsoleScreen(Screen[None]):
    """Subclasses implement ``compose_body``; errors go to ``report_error``.

    Contract used by every screen module:
    - ``self.console_app.api``: the :class:`console.client.ProtectClient`
    - ``self.console_app.can(permission) -> bool``: whether the key's role (and the
      profile's read-only flag) allows a changing action
    - ``ACTION_PERMISSIONS`` / ``action_unavailable`` / ``reload_data`` /
      ``escape_one_level``: see the module docstring
    - ``self.report_error(exc, retry)``: show the error banner
    - ``self.clear_error()``: hide it after a success

    Workers that raise anything else than a handled ``ApiError`` also land in
    the banner (via ``on_worker_state_changed``) as long as they are started with
    ``exit_on_error=False``: the console never dies because the backend did.
    """

    TITLE = ""

    ACTION_PERMISSIONS: ClassVar[dict[str, Permission]] = {}

    BINDINGS = [
        Binding("r", "reload", "Reload", tooltip="Reload this screen (also retries after an error)"),
        Binding("escape", "escape", "Back"),
    ]

    def __init__(self, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._retry: Callable[[], object] | None = None
        self._last_error: BaseException | None = None

    @property
    def console_app(self) -> ConsoleAppLike:
        """``self.app``, typed as the console app (see :class:`ConsoleAppLike`)."""
        return console_app_of(self)

    def compose(self) -> ComposeResult:
        yield ConsoleHeader(self.TITLE)
        yield ErrorBanner()
        yield from self.compose_body()
        yield ConsoleFooter()

    def compose_body(self) -> Iterable[Widget]:
        return []

    # ------------------------------------------------------------ availability
    def action_unavailable(self, action: str) -> str | None:
        """Why ``action`` cannot act here now, or None when it can.

        Subclasses add state reasons and end with ``return super().action_unavailable(action)``;
        this covers :attr:`ACTION_PERMISSIONS`: the read-only profile, the key's role, and
        "permissions not known yet" while whoami has not answered.
        """
        permission = self.ACTION_PERMISSIONS.get(action)
        if permission is None or permission == Permission.READ:
            return None
        app = self.console_app
        what = describe_action(self, action)
        if app.profile.readonly:
            return f"Read-only profile {app.profile.name!r}: cannot {what}."
        whoami = app.whoami
        if whoami is None:
            return f"Cannot {what} yet: this key's permissions are still loading (r reloads)."
        if not app.can(permission):
            return f"Role {whoami.role} cannot {what} (needs {permission.value})."
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hidden (False) while :meth:`action_unavailable` gives a reason; the frame toasts it on the key."""
        if action in FRAME_ACTIONS:
            return True
        if action == "escape":
            # In the footer only when there is somewhere to go back to; hidden, Esc still reaches app.back.
            return self.can_go_back()
        return self.action_unavailable(action) is None

    def relabel(self, action: str, description: str) -> None:
        """Give ``action``'s binding a new footer label (the filter in force), on this screen only."""
        bindings = self._bindings.key_to_bindings
        for key, found in list(bindings.items()):
            if any(b.action == action for b in found):
                # A new list: the class's merged bindings are shared by every instance.
                bindings[key] = [
                    dataclasses.replace(b, description=description) if b.action == action else b for b in found
                ]
        self.refresh_bindings()

    # ------------------------------------------------------------ errors
    async def ask(self, modal: ModalScreen[T]) -> T | None:
        """Show ``modal`` from one of this screen's workers and wait for its answer.

        Keys typed ahead (an action key, then ``2`` or Esc in the same read) can
        leave this screen before the worker gets here; a question about this
        screen's user must then not appear over another screen, where a ``y``
        would act on someone no longer in view. ``None`` means "not asked".
        """
        if not self.is_current:
            return None
        # Not push_screen_wait: when this worker is cancelled while the modal is up (another action key
        # typed ahead restarts the exclusive worker, the screen closes), its future is cancelled and the
        # modal's answer (a button, y, Enter) then raised InvalidStateError and ended the console. Here
        # an answer nobody waits for any more is dropped, and the orphaned question is closed.
        answer: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()

        def answered(result: T | None) -> None:
            if not answer.done():
                answer.set_result(result)

        self.app.push_screen(modal, answered)
        try:
            return await answer
        except asyncio.CancelledError:
            if modal.is_current:
                modal.dismiss(None)
            raise

    def report_error(self, exc: BaseException, retry: Callable[[], object] | None = None) -> None:
        """Show ``exc`` in the banner; ``r`` then reloads the screen (see :meth:`action_reload`)."""
        self._retry = retry
        self._last_error = exc
        try:
            self.query_one(ErrorBanner).show(exc, profile=self.console_app.profile)
        except Exception:  # noqa: BLE001 - not composed yet (or already gone): a toast will do
            self.app.notify(str(exc), severity="error", markup=False)
        self.refresh_bindings()

    def clear_error(self) -> None:
        try:
            banner = self.query_one(ErrorBanner)
        except Exception:  # noqa: BLE001
            return
        if banner.showing:
            banner.hide()
            self._retry = None
            self._last_error = None
            self.refresh_bindings()

    @property
    def error_visible(self) -> bool:
        try:
            return self.query_one(ErrorBanner).showing
        except Exception:  # noqa: BLE001
            return False

    def reload_data(self) -> None:
        """Fetch everything this screen shows again; every screen overrides it (``r`` calls it)."""

    def action_reload(self) -> None:
        """``r``: reload the screen; after an error also the key's identity (a full recovery)."""
        retry, error = self._retry, self._last_error
        # Hide first: a reload that fails again shows the banner anew.
        self.clear_error()
        self._retry = None
        self._last_error = None
        app = self.console_app
        if app.whoami is None or isinstance(error, Unauthorized):
            app.load_whoami()
        if type(self).reload_data is ConsoleScreen.reload_data and retry is not None:
            retry()  # a screen without reload_data of its own: the failed call is all there is to redo
        else:
            self.reload_data()
        self.refresh_bindings()

    # ------------------------------------------------------------ going back
    def main_widget(self) -> Widget | None:
        """The widget Esc and number keys return focus to: ``AUTO_FOCUS`` when set, else the first table."""
        selector = self.AUTO_FOCUS
        try:
            if selector:
                return self.query(selector).first()
            return self.query(VirtualTable).first()
        except Exception:  # noqa: BLE001 - no such widget (yet)
            return None

    def escape_one_level(self) -> bool:
        """Go back one level inside this screen; True when done, False to let the frame go back.

        The default: when something other than the main widget has focus (a search box, a
        panel), focus goes back to the main widget. Override to clear a search first, and
        call super() for the focus part.
        """
        main = self.main_widget()
        focused = self.focused
        if main is not None and focused is not None and focused is not main and main.focusable:
            self.set_focus(main)  # at once: the keys typed after Esc go to the list
            return self.focused is main  # it could not take the focus: go back instead of Esc doing nothing
        return False

    def can_go_back(self) -> bool:
        """Whether Esc has a level to go back to (for the footer's ``esc Back``)."""
        app = self.app
        stack = app.screen_stack
        if (self in stack and stack.index(self) > 0) or app.current_mode != HOME:
            return True
        main, focused = self.main_widget(), self.focused
        return main is not None and focused is not None and focused is not main

    def action_escape(self) -> None:
        self.console_app.action_back()  # asks escape_one_level first

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker: Worker[Any] = event.worker
        if event.state == WorkerState.ERROR and worker.error is not None:
            self.report_error(worker.error, self.reload_data)
