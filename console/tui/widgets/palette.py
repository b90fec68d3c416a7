"""The command palette, guarded against two Textual 8.2 races seen with typed-ahead keys.

Over a slow SSH link several keys arrive in one read. Two of Textual's own
palette paths then raise and end the whole console:
- PageUp/PageDown before the command list has laid out its lines (KeyError
  in OptionList._move_page);
- Esc closing the palette while its search worker still runs (NoMatches when
  the worker touches the command list that is gone).
Both are harmless to ignore: the key did nothing, or the palette is closed.
"""

from __future__ import annotations

from textual.command import CommandPalette
from textual.css.query import NoMatches


class GuardedCommandPalette(CommandPalette):
    def _action_command_list(self, action: str) -> None:
        try:
            super()._action_command_list(action)
        except (KeyError, IndexError):
            pass  # the list has not been laid out yet: nothing to page through

    def _watch__list_visible(self) -> None:
        try:
            super()._watch__list_visible()
        except NoMatches:
            pass  # closed while its search was still running
