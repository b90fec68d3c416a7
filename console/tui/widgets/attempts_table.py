"""A user's recent push attempts as a Rich table sized at draw time, for the width it gets.

Why not fixed ratios: Resource is often a short word ("VPN") while App and Location
run long ("Unknown (Tor exit node)"), so equal shares cut the useful columns and pad
the short one. Here each text column gets what its longest value needs, and when
the width falls short the room is shared fairly (a column never takes more than its
share while another is cut). The rows are few (one screen), so measuring them is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from ...display import ago, push_status_text
from ...models import PushAttempt
from ...safe_text import printable

GAP = 2  # cells between columns (padding 1 on each side, none at the table's edges)
MIN_TEXT = 6  # the narrowest a text column gets before the IP column gives way
IP_KEEPS = 20  # the IP column shows only if every text column still gets this much (or all it needs):
# app and location help a support desk more than the address


def share_width(naturals: list[int], available: int, minimum: int = 1) -> list[int]:
    """Widths for columns wanting ``naturals`` in ``available`` cells: all they need if it fits,
    else the narrow ones in full and the rest an equal share (water-filling)."""
    widths = [0] * len(naturals)
    left = max(available, minimum * len(naturals))
    pending = sorted(range(len(naturals)), key=lambda i: naturals[i])
    while pending:
        fair = left // len(pending)
        index = pending.pop(0)
        widths[index] = max(minimum, min(naturals[index], fair))
        left -= widths[index]
    return widths


class AttemptsTable:
    """When, status, resource, app, location (and IP when there is room), newest first."""

    def __init__(self, attempts: Iterable[PushAttempt], now: datetime) -> None:
        self.rows: list[tuple[Text, Text, Text, Text, Text, Text]] = [
            (
                Text(ago(attempt.createdAt, now)),
                push_status_text(attempt.status, fraud=attempt.fraud),
                Text(printable(attempt.resource, max_length=200)),
                Text(printable(attempt.context.app, max_length=100)),
                Text(printable(attempt.context.location, max_length=100)),
                Text(printable(attempt.context.ip, max_length=64)),
            )
            for attempt in attempts
        ]

    HEADERS = ("When", "Status", "Resource", "App", "Location", "IP")
    TEXT_COLUMNS = (2, 3, 4)  # resource, app, location: these share what is left

    def _naturals(self) -> list[int]:
        return [
            max([cell_len(header)] + [row[index].cell_len for row in self.rows])
            for index, header in enumerate(self.HEADERS)
        ]

    def layout(self, width: int) -> list[tuple[int, int]]:
        """``(column index, width)`` for the columns drawn at ``width`` cells."""
        naturals = self._naturals()
        for columns in ((0, 1, 2, 3, 4, 5), (0, 1, 2, 3, 4)):
            fixed = [i for i in columns if i not in self.TEXT_COLUMNS]
            available = width - sum(naturals[i] for i in fixed) - GAP * (len(columns) - 1)
            shared = share_width([naturals[i] for i in self.TEXT_COLUMNS], available, MIN_TEXT)
            widths = dict(zip(self.TEXT_COLUMNS, shared, strict=True))
            with_ip = 5 in columns
            if not with_ip or all(widths[i] >= min(naturals[i], IP_KEEPS) for i in self.TEXT_COLUMNS):
                return [(i, widths.get(i, naturals[i])) for i in columns]
        raise AssertionError("unreachable")  # the second layout always returns

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False, header_style="bold")
        columns = self.layout(options.max_width)
        for index, column_width in columns:
            table.add_column(self.HEADERS[index], width=column_width, no_wrap=True, overflow="ellipsis")
        for row in self.rows:
            table.add_row(*(row[index] for index, _ in columns))
        yield table
