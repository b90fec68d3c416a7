"""The command palette, guarded against Textual 8.2 races seen with typed-ahead keys.

Over a slow SSH link several keys arrive in one read. Three of Textual's own
palette paths then raise and end the whole console:
- PageUp/PageDown before the command list has laid out its lines (KeyError
  in OptionList._move_page);
- Esc closing the palette while its search worker still runs (NoMatches when
  the worker touches the command list that is gone);
- Enter twice (a double tap, key repeat, ``ctrl+p Enter Enter`` typed ahead):
  the first runs the command and dismisses the palette, the second, already
  queued for the palette, dismisses it again, and ``Screen.dismiss`` pops
  whatever screen is on top, down to the last: ScreenStackError.
All are harmless to ignore: the key did nothing, or the palette is closed.

Typed ahead, ``ctrl+p`` + an exact email, username or id + Enter reaches Enter before any hit is
listed: the palette then opens that user itself (one indexed lookup) instead of doing nothing.
"""

from __future__ import annotations

import inspect
from typing import Any

from textual import on, work
from textual.await_complete import AwaitComplete
from textual.command import CommandList, CommandPalette
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Button, Input

from ...client import ApiError, user_key_kind
from ..screens.base import console_app_of


class GuardedCommandPalette(CommandPalette):
    _palette_closed = False

    def _action_command_list(self, action: str) -> None:
        if self._palette_closed:
            return
        try:
            super()._action_command_list(action)
        except (KeyError, IndexError):
            pass  # the list has not been laid out yet: nothing to page through

    def _watch__list_visible(self) -> None:
        try:
            super()._watch__list_visible()
        except NoMatches:
            pass  # closed while its search was still running

    async def _watch__show_busy(self) -> None:
        try:
            await super()._watch__show_busy()
        except NoMatches:
            pass  # closed while its search was still running

    @work(exclusive=True, group=CommandPalette._GATHER_COMMANDS_GROUP)
    async def _gather_commands(self, search_value: str) -> None:
        # Textual's search worker (exit_on_error: its NoMatches ended the console) when the palette
        # closes under it: Enter on a hit typed ahead while the user lookup was still searching.
        try:
            await inspect.unwrap(CommandPalette._gather_commands)(self, search_value)
        except NoMatches:
            pass

    @on(Input.Submitted)
    @on(Button.Pressed)
    def _ignore_once_palette_closed(self, event: Message) -> None:
        # Runs before CommandPalette's own handler (subclass first); prevent_default skips that one.
        if self._palette_closed or not self.is_current:
            event.stop()
            event.prevent_default()

    def _select_or_command(self, event: Input.Submitted | Button.Pressed | None = None) -> None:
        if self._palette_closed or not self.is_current:
            if event is not None:
                event.stop()
            return  # a second Enter for a palette already closing: its command runs once
        if self._selected_command is None and self._nothing_highlighted():
            # Nothing chosen yet (the hits not listed, or listed for an earlier query): an email or id
            # is that user, and so is a username when no hit is listed or its exact hit is first.
            term = self.query_one(Input).value.strip()
            kind = user_key_kind(term)
            wanted = kind is not None and (kind != "username" or not self._list_visible or self._exact_hit_first(term))
            if wanted and hasattr(self.app, "open_user"):
                if event is not None:
                    event.stop()
                self._open_exact(term)
                return
        super()._select_or_command(event)

    def _exact_hit_first(self, username: str) -> bool:
        try:
            options = self.query_one(CommandList)
            if not options.option_count:
                return False
            prompt = str(options.get_option_at_index(0).prompt)
        except (NoMatches, IndexError):
            return False
        return prompt.casefold().startswith(f"open user {username.casefold()} ")

    def _nothing_highlighted(self) -> bool:
        try:
            return self.query_one(CommandList).highlighted is None
        except NoMatches:
            return True

    @work(exclusive=True, group="palette-exact", exit_on_error=False)
    async def _open_exact(self, term: str) -> None:
        try:
            user = await console_app_of(self).api.lookup_user(term)
        except ApiError:
            return  # nothing to open: the palette stays, its search says why
        if self._palette_closed or not self.is_current or self.query_one(Input).value.strip() != term:
            return  # closed, or typed on meanwhile: that Enter was for an older query
        if user is None:
            super()._select_or_command(None)  # no such user: Enter does what it does on the hits
            return
        self._cancel_gather_commands()
        self.app.post_message(CommandPalette.Closed(option_selected=True))
        self.dismiss()
        self.app.call_later(console_app_of(self).open_user, user.id)

    def dismiss(self, result: Any = None) -> AwaitComplete:
        # Dismiss pops the app's top screen, whichever it is: only ever once, and only while on top.
        if self._palette_closed or not self.is_current:
            return AwaitComplete.nothing()  # type: ignore[no-untyped-call,no-any-return]  # untyped in Textual
        self._palette_closed = True
        return super().dismiss(result)
