"""A panel of users with many blocked or denied pushes recently: possible push bombing.

The figures come from the server's one aggregate (``client.push_suspects``, the same
counting as a user's own ``push_stats`` on their screen), never from pages tallied here.
Each line shows when the user's last attempt was, so a live attack stands out from old
history, and whether the attack was stopped (``push blocked until 14:05 by desk-anna``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ... import display
from ...display import FRAUD_STYLE, PUSH_STATUS_STYLES, aware, clock, since, window_words
from ...models import BOMBING_THRESHOLD, PushBlock, PushStats, PushStatus
from ...safe_text import printable

LIVE_SECONDS = 5 * 60  # a last attempt this recent reads as an attack going on now


@dataclass
class Suspect:
    """One user's blocked/denied attempts in the window, as the server counted them."""

    user_id: str
    username: str
    blocked: int = 0
    denied: int = 0
    fraud: int = 0
    resources: set[str] = field(default_factory=set)
    last: datetime | None = None
    block: PushBlock | None = None  # the stop in force, if any

    @property
    def total(self) -> int:
        return self.blocked + self.denied

    @property
    def stopped(self) -> bool:
        return self.block is not None

    @classmethod
    def from_stats(cls, stats: PushStats) -> Suspect:
        return cls(
            stats.userId,
            stats.username,
            blocked=stats.blocked,
            denied=stats.denied,
            fraud=stats.fraud,
            resources=set(stats.resources),
            last=stats.lastAttemptAt,
            block=stats.pushBlock,
        )


def block_text(block: PushBlock) -> str:
    """``push blocked until 14:05 by desk-anna``."""
    return f"push blocked until {clock(block.blockedUntil)} by {printable(block.blockedBy, max_length=32)}"


def suspect_prompt(suspect: Suspect, now: datetime | None = None, *, can_stop: bool = True) -> Text:
    """First line: who, how many refused, when last, where; second line (only when stopped): the block."""
    now = now or display.now()
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"{printable(suspect.username or suspect.user_id, max_length=24):<24} ", style="bold")
    line.append(f"{suspect.blocked:>3} blocked", style=PUSH_STATUS_STYLES[PushStatus.BLOCKED])
    line.append("  ")
    line.append(f"{suspect.denied:>3} denied", style=PUSH_STATUS_STYLES[PushStatus.DENIED])
    if suspect.last is not None:
        live = (now - aware(suspect.last)).total_seconds() < LIVE_SECONDS
        line.append("  last ", style="dim")
        line.append(since(suspect.last, now), style="bold" if live else "dim")
    if suspect.fraud:
        line.append(f"  {suspect.fraud} reported fraud", style=FRAUD_STYLE)
    if suspect.resources:
        names = ", ".join(sorted(printable(r, max_length=20) for r in suspect.resources)[:2])
        more = len(suspect.resources) - 2
        line.append(f"  on {names}{f' +{more}' if more > 0 else ''}", style="dim")
    if suspect.block is not None:
        line.append("\n")
        line.append("    STOPPED: ", style="bold green")
        line.append(block_text(suspect.block))
        if can_stop:
            line.append(" (X lifts)", style="dim")
    return line


class BombingPanel(Vertical):
    """Title line plus a list of suspects; Enter on one posts :class:`BombingPanel.UserChosen`.
    (Esc is the screen's: it gives focus back to the attempts, one level.)"""

    DEFAULT_CSS = """
    BombingPanel { height: auto; max-height: 9; border-top: solid $warning; }
    BombingPanel #bombing-title { padding: 0 1; height: 1; }
    BombingPanel #bombing-list { height: auto; max-height: 7; border: none; padding: 0; }
    BombingPanel #bombing-list:focus { background-tint: $foreground 5%; }
    """

    class UserChosen(Message):
        def __init__(self, user_id: str) -> None:
            super().__init__()
            self.user_id = user_id

    class Leave(Message):
        """The list emptied while it had focus: the screen gives focus back to its table."""

    def __init__(self, *, window_label: str = window_words(), id: str | None = None) -> None:
        super().__init__(id=id)
        self.window_label = window_label
        self.suspects: list[Suspect] = []
        self.checked = False
        self.can_stop = False  # the key may stop attacks (hints name `X` only then)
        self.problem: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("Possible push bombing: checking…", style="dim"), id="bombing-title")
        option_list = OptionList(id="bombing-list", markup=False)
        option_list.display = False
        yield option_list

    @property
    def option_list(self) -> OptionList:
        return self.query_one("#bombing-list", OptionList)

    def show_stats(self, stats: Iterable[PushStats]) -> None:
        """Show the server's aggregate (``client.push_suspects``) as it came: most hostile first."""
        self.show_suspects([Suspect.from_stats(s) for s in stats])

    def show_suspects(self, suspects: list[Suspect], *, partial: bool = False) -> None:
        """Replace the list, keeping the highlight on the same user; ``partial``: not everyone is listed."""
        self.suspects = suspects
        self.checked = True
        self.problem = None
        stopped = sum(1 for s in suspects if s.stopped)
        title = Text(no_wrap=True, overflow="ellipsis")
        if suspects:
            title.append("Possible push bombing", style="bold yellow")
            title.append(f" in the {self.window_label}: {len(suspects)} user(s)")
            if stopped:
                title.append(f", {stopped} stopped", style="green")
            title.append(" (b, then Enter opens, X stops)" if self.can_stop else " (b, then Enter opens)", style="dim")
        else:
            title.append(
                f"No push bombing seen: nobody has {BOMBING_THRESHOLD}+ blocked/denied pushes in the {self.window_label}",
                style="dim",
            )
        if partial:
            title.append(" (most hostile only)", style="dim")
        self.query_one("#bombing-title", Static).update(title)
        option_list = self.option_list
        highlighted = option_list.highlighted_option.id if option_list.highlighted_option else None
        had_focus = self.screen.focused is option_list
        now = display.now()
        option_list.clear_options()
        option_list.add_options(Option(suspect_prompt(s, now, can_stop=self.can_stop), id=s.user_id) for s in suspects)
        option_list.display = bool(suspects)
        if highlighted is not None and any(s.user_id == highlighted for s in suspects):
            option_list.highlighted = option_list.get_option_index(highlighted)
        elif had_focus and suspects:
            option_list.highlighted = 0
        if had_focus and not suspects:
            self.post_message(self.Leave())

    def show_problem(self, message: str) -> None:
        self.problem = message
        self.query_one("#bombing-title", Static).update(
            Text(f"Possible push bombing: {printable(message)}", style="dim")
        )

    def focus_list(self) -> bool:
        option_list = self.option_list
        if option_list.display and option_list.option_count:
            if option_list.highlighted is None:
                option_list.highlighted = 0  # Enter then opens the worst case at once
            # At once, not after a refresh (``focus()``): keys typed right after `b` (down, X, Esc)
            # are meant for the panel.
            self.screen.set_focus(option_list)
            return True
        return False

    @property
    def highlighted_suspect(self) -> Suspect | None:
        """The suspect under the panel's highlight, or None."""
        option = self.option_list.highlighted_option
        if option is None:
            return None
        return next((s for s in self.suspects if s.user_id == option.id), None)

    def suspect(self, user_id: str) -> Suspect | None:
        return next((s for s in self.suspects if s.user_id == user_id), None)

    def mark_stopped(self, user_id: str, block: PushBlock | None) -> None:
        """Show a stop (or its lift) at once, before the next scan confirms it."""
        suspect = self.suspect(user_id)
        if suspect is None:
            return
        suspect.block = block
        self.show_suspects(self.suspects)

    @on(OptionList.OptionSelected, "#bombing-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.post_message(self.UserChosen(event.option.id))
