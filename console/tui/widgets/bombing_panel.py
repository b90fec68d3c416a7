"""A panel of users with many blocked or denied pushes recently: possible push bombing."""

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

from ...models import PushAttempt, PushStatus
from ...safe_text import printable
from ..formatting import FRAUD_STYLE, PUSH_STATUS_STYLES

SUSPECT_THRESHOLD = 5  # blocked + denied attempts in the window that make a user worth a look


@dataclass
class Suspect:
    """One user's blocked/denied attempts in the window."""

    user_id: str
    username: str
    blocked: int = 0
    denied: int = 0
    fraud: int = 0
    resources: set[str] = field(default_factory=set)
    last: datetime | None = None

    @property
    def total(self) -> int:
        return self.blocked + self.denied


def tally_suspects(attempts: Iterable[PushAttempt], threshold: int = SUSPECT_THRESHOLD) -> list[Suspect]:
    """Users with at least ``threshold`` blocked or denied attempts, most first."""
    by_user: dict[str, Suspect] = {}
    seen: set[str] = set()
    for attempt in attempts:
        if attempt.id in seen or attempt.status not in (PushStatus.BLOCKED, PushStatus.DENIED):
            continue
        seen.add(attempt.id)
        suspect = by_user.setdefault(attempt.userId, Suspect(attempt.userId, attempt.username))
        if attempt.status == PushStatus.BLOCKED:
            suspect.blocked += 1
        else:
            suspect.denied += 1
        suspect.fraud += int(attempt.fraud)
        suspect.resources.add(attempt.resource)
        if suspect.last is None or attempt.createdAt > suspect.last:
            suspect.last = attempt.createdAt
    found = [s for s in by_user.values() if s.total >= threshold]
    return sorted(found, key=lambda s: (-s.total, s.username))


def suspect_prompt(suspect: Suspect) -> Text:
    line = Text()
    line.append(f"{printable(suspect.username or suspect.user_id, max_length=24):<24} ", style="bold")
    line.append(f"{suspect.blocked:>3} blocked", style=PUSH_STATUS_STYLES[PushStatus.BLOCKED])
    line.append("  ")
    line.append(f"{suspect.denied:>3} denied", style=PUSH_STATUS_STYLES[PushStatus.DENIED])
    if suspect.fraud:
        line.append(f"  {suspect.fraud} reported fraud", style=FRAUD_STYLE)
    if suspect.resources:
        names = ", ".join(sorted(printable(r, max_length=20) for r in suspect.resources)[:2])
        more = len(suspect.resources) - 2
        line.append(f"  on {names}{f' +{more}' if more > 0 else ''}", style="dim")
    return line


class BombingPanel(Vertical):
    """Title line plus a list of suspects; Enter on one posts :class:`BombingPanel.UserChosen`."""

    DEFAULT_CSS = """
    BombingPanel { height: auto; max-height: 7; border-top: solid $warning; }
    BombingPanel #bombing-title { padding: 0 1; height: 1; }
    BombingPanel #bombing-list { height: auto; max-height: 5; border: none; padding: 0; }
    BombingPanel #bombing-list:focus { background-tint: $foreground 5%; }
    """

    class UserChosen(Message):
        def __init__(self, user_id: str) -> None:
            super().__init__()
            self.user_id = user_id

    def __init__(self, *, window_label: str = "last hour", id: str | None = None) -> None:
        super().__init__(id=id)
        self.window_label = window_label
        self.suspects: list[Suspect] = []
        self.checked = False

    def compose(self) -> ComposeResult:
        yield Static(Text("Possible push bombing: checking…", style="dim"), id="bombing-title")
        option_list = OptionList(id="bombing-list", markup=False)
        option_list.display = False
        yield option_list

    def show_suspects(self, suspects: list[Suspect], *, partial: bool = False) -> None:
        """Replace the list; ``partial`` says the scan stopped at its page limit."""
        self.suspects = suspects
        self.checked = True
        title = Text()
        if suspects:
            title.append("Possible push bombing", style="bold yellow")
            title.append(f" in the {self.window_label}: {len(suspects)} user(s)")
            title.append(" (b, then Enter opens)", style="dim")
        else:
            title.append(
                f"No push bombing seen: nobody has {SUSPECT_THRESHOLD}+ blocked/denied pushes in the {self.window_label}",
                style="dim",
            )
        if partial:
            title.append(" (newest attempts only)", style="dim")
        self.query_one("#bombing-title", Static).update(title)
        option_list = self.query_one("#bombing-list", OptionList)
        highlighted = option_list.highlighted_option.id if option_list.highlighted_option else None
        option_list.clear_options()
        option_list.add_options(Option(suspect_prompt(s), id=s.user_id) for s in suspects)
        option_list.display = bool(suspects)
        if highlighted is not None and any(s.user_id == highlighted for s in suspects):
            option_list.highlighted = option_list.get_option_index(highlighted)

    def show_problem(self, message: str) -> None:
        self.query_one("#bombing-title", Static).update(Text(f"Possible push bombing: {printable(message)}", style="dim"))

    def focus_list(self) -> bool:
        option_list = self.query_one("#bombing-list", OptionList)
        if option_list.display and option_list.option_count:
            if option_list.highlighted is None:
                option_list.highlighted = 0  # Enter then opens the worst case at once
            option_list.focus()
            return True
        return False

    @on(OptionList.OptionSelected, "#bombing-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.post_message(self.UserChosen(event.option.id))
