"""console/display.py: one clock for relative times, one zone policy, one set of status colours."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from console import display
from console.models import EnrollmentStatus, PushStatus, UserState

ROOT = Path(__file__).resolve().parents[2]
FROZEN = datetime(2026, 12, 2, 14, 5, 9, tzinfo=UTC)


@pytest.fixture
def tokyo() -> Iterator[None]:
    """The admin's terminal runs in Tokyo (UTC+9): local times are later than UTC."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_every_relative_time_reads_the_one_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(display, "now", lambda: FROZEN)
    assert display.ago(FROZEN - timedelta(minutes=5)) == "5m ago"
    assert display.ago(FROZEN + timedelta(hours=2)) == "in 2h"
    assert display.short_age(FROZEN - timedelta(days=90)) == "Sep 2026"
    assert display.since(FROZEN - timedelta(seconds=90)) == "90s ago"
    assert display.clock(FROZEN - timedelta(minutes=1)) == display.local_text(FROZEN - timedelta(minutes=1), "%H:%M")
    yesterday = FROZEN - timedelta(days=1)
    assert display.clock(yesterday) == display.local_text(yesterday, "%Y-%m-%d %H:%M")
    naive = FROZEN.replace(tzinfo=None) - timedelta(seconds=30)  # the service's naive times are UTC
    assert display.ago(naive) == "30s ago"


def test_local_on_screen_utc_where_copied(tokyo: None) -> None:
    assert display.stamp(FROZEN) == "2026-12-02 23:05"
    assert display.stamp_zone(FROZEN) == "2026-12-02 23:05 JST"
    assert display.clock_zone(FROZEN, FROZEN) == "23:05 JST"
    assert display.utc_stamp(FROZEN) == "2026-12-02 14:05:09Z"
    assert display.utc_compact(FROZEN, FROZEN) == "14:05 UTC"
    assert display.iso_z(FROZEN.replace(tzinfo=None)) == "2026-12-02T14:05:09Z"
    # A time local cannot show (past year 9999 east of UTC) is shown in UTC, and says so.
    assert display.stamp_zone(datetime(9999, 12, 31, 23, 0, tzinfo=UTC)) == "9999-12-31 23:00 UTC"


def test_the_cli_colours_statuses_as_the_console_does() -> None:
    from console.cli import _status

    for status in PushStatus:
        assert _status(status).style == display.push_status_text(status).style == display.PUSH_STATUS_STYLES[status]
    for enrollment in EnrollmentStatus:
        assert _status(enrollment).style == display.enrollment_text(enrollment).style
    for state in UserState:
        assert _status(state).style == display.user_state_text(state).style
    assert display.push_status_text(PushStatus.DENIED, fraud=True).plain == "denied FRAUD"


def test_display_loads_neither_textual_nor_rich_until_asked() -> None:
    code = (
        "import sys; import console.display as d; loaded = [m for m in ('textual', 'rich') if m in sys.modules];"
        "assert not loaded, loaded; d.utc_stamp(d.now()); assert 'rich' not in sys.modules;"
        "d.push_status_text('denied'); assert 'rich' in sys.modules and 'textual' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
