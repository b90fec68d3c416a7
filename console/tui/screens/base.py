"""The frame every console screen shares: header, error banner, body, footer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from ..widgets.error_banner import ErrorBanner
from ..widgets.footer import ConsoleFooter
from ..widgets.header import ConsoleHeader

T = TypeVar("T")


class ConsoleScreen(Screen):
    """Subclasses implement ``compose_body``; errors go to ``report_error``.

    Contract used by every screen module:
    - ``self.app.api``: the :class:`console.client.ProtectClient`
    - ``self.app.can(permission) -> bool``: whether the key's role (and the
      profile's read-only flag) allows a changing action
    - ``self.report_error(exc, retry)``: show the error banner with a retry
    - ``self.clear_error()``: hide it after a success

    Workers that raise anything else than a handled ``ApiError`` also land in
    the banner (via ``on_worker_state_changed``) as long as they are started with
    ``exit_on_error=False``: the console never dies because the backend did.
    """

    TITLE = ""

    BINDINGS = [
        Binding("r", "retry", "Retry"),
    ]

    def __init__(self, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._retry: Callable[[], object] | None = None

    def compose(self) -> ComposeResult:
        yield ConsoleHeader(self.TITLE)
        yield ErrorBanner()
        yield from self.compose_body()
        yield ConsoleFooter()

    def compose_body(self) -> Iterable[Widget]:
        return []

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
        return await self.app.push_screen_wait(modal)

    def report_error(self, exc: BaseException, retry: Callable[[], object] | None = None) -> None:
        """Show ``exc`` in the banner; ``r`` then calls ``retry`` (or :meth:`reload_data`)."""
        self._retry = retry
        try:
            self.query_one(ErrorBanner).show(exc)
        except Exception:  # noqa: BLE001 - not composed yet (or already gone): a toast will do
            self.app.notify(str(exc), severity="error", markup=False)
        self.refresh_bindings()

    def clear_error(self) -> None:
        try:
            banner = self.query_one(ErrorBanner)
        except Exception:  # noqa: BLE001
            return
        if banner.visible:
            banner.hide()
            self._retry = None
            self.refresh_bindings()

    @property
    def error_visible(self) -> bool:
        try:
            return self.query_one(ErrorBanner).visible
        except Exception:  # noqa: BLE001
            return False

    def reload_data(self) -> None:
        """Fetch this screen's data again; subclasses override."""

    def action_retry(self) -> None:
        retry = self._retry or self.reload_data
        # Hide first: a retry that fails again shows the banner anew.
        self.clear_error()
        if getattr(self.app, "whoami", True) is None:
            self.app.load_whoami()  # type: ignore[attr-defined]
        retry()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "retry":
            return self.error_visible
        return True

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker: Worker[Any] = event.worker
        if event.state == WorkerState.ERROR and worker.error is not None:
            self.report_error(worker.error, self.reload_data)
