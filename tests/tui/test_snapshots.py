"""Snapshot tests: every screen and the important modals at 80x24, so a layout change shows as a diff in review.

The console runs for real (Pilot) against the real service on 127.0.0.1 over a real SQLite file, with the
demo's deterministic data: a fixed seed, a fixed service clock and the console's clock frozen at it (see
``screenshots/scenes.py``, shared with ``screenshots/make_screenshots.py``). Each ``run_before`` waits for the
data on screen, never a fixed time.

After an intended change of a screen, regenerate and review the SVGs:

    .venv/bin/python -m pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from console.tui.app import ProtectConsoleApp
from screenshots import scenes
from screenshots.scenes import Demo

SIZE = (80, 24)
NO_MATCH = "zzqx"  # no username, name or email has it


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo service (5,000 seeded users and their activity), shared by this module's tests: they only look."""
    with scenes.demo_backend(Path(tmp_path_factory.mktemp("snapshots")) / "protect.db", scenes.USERS) as running:
        yield running


@pytest.fixture
def console(demo: Demo) -> Iterator[Callable[..., ProtectConsoleApp]]:
    """``console(**options) -> app``: the real console on the demo, its clock frozen at the service's."""
    with scenes.console_time(demo):
        yield lambda **options: scenes.console_app(demo, **options)


@pytest.fixture
def snap(snap_compare: Any, console: Callable[..., ProtectConsoleApp]) -> Callable[..., bool]:
    """``snap(run_before, **console_options)``: the console at 80x24 after ``run_before``, compared to its SVG."""

    def compare(run_before: Callable[[Pilot[Any]], Any], **options: Any) -> bool:
        return bool(snap_compare(console(**options), terminal_size=SIZE, run_before=run_before))

    return compare


def victim(demo: Demo) -> Any:
    assert demo.victim is not None
    return demo.victim


class TestUsersDirectory:
    def test_list(self, snap: Callable[..., bool]) -> None:
        """The first screen: users by username, their MFA at a glance."""
        assert snap(scenes.show_users)

    def test_search_results(self, snap: Callable[..., bool], demo: Demo) -> None:
        """Search as you type: the matches for a last name (the push-bombing victim's)."""
        term = victim(demo).lastname
        assert snap(lambda pilot: scenes.search(pilot, term))

    def test_empty_search(self, snap: Callable[..., bool]) -> None:
        """A search that matches nobody says so."""
        assert snap(lambda pilot: scenes.search(pilot, NO_MATCH))


class TestUserDetail:
    def test_enrolled_device_under_attack(self, snap: Callable[..., bool], demo: Demo) -> None:
        """A user with a phone, under push bombing: the troubleshooting advice comes first."""
        user = victim(demo)
        assert snap(lambda pilot: scenes.show_user(pilot, user), open_user=user.username)

    def test_no_device(self, snap: Callable[..., bool], demo: Demo) -> None:
        """A user with no MFA at all: how to enroll."""
        assert demo.no_device is not None
        user = demo.no_device
        assert snap(lambda pilot: scenes.show_user(pilot, user), open_user=user.username)


class TestConfirmation:
    def test_names_the_target_with_cancel_focused(self, snap: Callable[..., bool], demo: Demo) -> None:
        """A destructive action asks first, naming whom it changes; Cancel has the focus."""
        user = victim(demo)

        async def run_before(pilot: Pilot[Any]) -> None:
            await scenes.show_user(pilot, user)
            confirm = await scenes.ask_to_reset(pilot)
            assert confirm.focused.id == "cancel"
            title = str(confirm.query_one("#confirm-title").render())
            assert user.username in title, title

        assert snap(run_before, open_user=user.username)

    def test_stop_attack_asks_once(self, snap: Callable[..., bool], demo: Demo) -> None:
        """`X` on a user under attack: what stopping does, for how long, and Cancel focused."""
        user = victim(demo)

        async def run_before(pilot: Pilot[Any]) -> None:
            await scenes.show_user(pilot, user)
            await scenes.ask_to_stop_attack(pilot)

        assert snap(run_before, open_user=user.username)


class TestActivity:
    def test_attempts_and_the_attack_panel(self, snap: Callable[..., bool]) -> None:
        """Push attempts, newest first, and the push-bombing panel naming the victim."""

        async def run_before(pilot: Pilot[Any]) -> None:
            await scenes.show_users(pilot)
            await scenes.show_activity(pilot)

        assert snap(run_before)


class TestPrivacy:
    def test_diagnostics_sharing(self, snap: Callable[..., bool]) -> None:
        async def run_before(pilot: Pilot[Any]) -> None:
            await scenes.show_users(pilot)
            await scenes.show_privacy(pilot)

        assert snap(run_before)


class TestSettings:
    def test_policy(self, snap: Callable[..., bool]) -> None:
        async def run_before(pilot: Pilot[Any]) -> None:
            await scenes.show_users(pilot)
            await scenes.show_settings(pilot)

        assert snap(run_before)


class TestAudit:
    def test_events_newest_first(self, snap: Callable[..., bool]) -> None:
        async def run_before(pilot: Pilot[Any]) -> None:
            await scenes.show_users(pilot)
            await scenes.show_audit(pilot)

        assert snap(run_before)


class TestHelp:
    def test_over_the_users_screen(self, snap: Callable[..., bool]) -> None:
        """`?`: the keys that work here, over the screen they are for."""

        async def run_before(pilot: Pilot[Any]) -> None:
            await scenes.show_users(pilot)
            await scenes.show_help(pilot)

        assert snap(run_before)


class TestErrorBanner:
    def test_backend_down(self, snap: Callable[..., bool]) -> None:
        """Nothing listens on the profile's port: the banner says so and how to retry."""
        assert snap(scenes.show_error_banner, port=scenes.closed_port(), retries=0)
