"""Regenerate the console's screenshots (SVG) from a throwaway demo backend.

Run from the repository root::

    .venv/bin/python screenshots/make_screenshots.py

It starts the demo of :mod:`screenshots.scenes` (5,000 seeded users, live activity and a few admin actions made
through the real API, on a fixed seed and a fixed service clock, with the console's clock frozen at it), drives
the real console with Textual's Pilot and saves one SVG per screen next to this file: the same SVGs every run,
so a diff of them is a change of the console. Every wait is on a condition (data loaded, modal open), never a
bare sleep. The demo database is deleted at the end; the script fails if any API key shows up in an SVG.
The snapshot tests (tests/tui/test_snapshots.py) take the same scenes at 80x24.
"""

from __future__ import annotations

import asyncio
import html
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable without installing the package

from console.client import ApiError  # noqa: E402
from screenshots import scenes  # noqa: E402
from screenshots.scenes import Demo  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent
SIZE = (110, 34)


def say(message: str) -> None:
    print(message, flush=True)


def svg_text(svg: str) -> str:
    """The characters drawn in a Rich/Textual SVG, in order, without whitespace (spans and lines joined)."""
    drawn = "".join(html.unescape(m) for m in re.findall(r"<text\b[^>]*>([^<]*)</text>", svg))
    return re.sub(r"\s", "", drawn)


def leaks_a_key(svg: str, secrets: list[str]) -> bool:
    """Whether any 16 consecutive characters of a key are drawn: catches keys that are cropped,
    wrapped or split across styles, not just whole ones."""
    drawn = svg_text(svg)
    return any(
        secret[i : i + 16] in drawn or secret[i : i + 16] in svg
        for secret in secrets
        for i in range(max(1, len(secret) - 15))
    )


def save(svg: str, name: str, demo: Demo, saved: list[Path]) -> None:
    if leaks_a_key(svg, demo.secrets):
        raise SystemExit(f"screenshots: {name} showed (part of) an API key; not saved")
    drawn = svg_text(svg)
    if "loading…" in drawn or "Loading" in drawn:
        say(f"  warning: {name} still shows a loading placeholder")
    path = OUT_DIR / name
    path.write_text(svg, encoding="utf-8")
    saved.append(path)
    say(f"  {path}")


async def take_screenshots(demo: Demo) -> list[Path]:
    victim = demo.victim
    assert victim is not None
    saved: list[Path] = []
    app = scenes.console_app(demo)
    async with app.run_test(size=SIZE) as pilot:

        async def shoot(name: str, *, modal: bool = False) -> None:
            await scenes.settle(pilot, modal=modal)
            save(app.export_screenshot(), name, demo, saved)

        async def back_to(screen: Any, what: str) -> None:
            await scenes.wait_for(lambda: app.screen is screen, what)

        await scenes.show_users(pilot)
        await shoot("users.svg")

        # Search for the push-bombing victim, then open them from the results.
        await scenes.search(pilot, victim.username)
        await shoot("users_search.svg")
        detail = await scenes.open_from_results(pilot, victim)
        await shoot("user_detail.svg")

        # A destructive action asks first (and is cancelled here).
        await scenes.ask_to_reset(pilot)
        await shoot("confirm.svg", modal=True)
        await pilot.press("n")
        await back_to(detail, "the detail after cancelling")

        # Stop attack: one confirmation (cancelled here, so the screenshots keep the attack live).
        await scenes.ask_to_stop_attack(pilot)
        await shoot("stop_attack.svg", modal=True)
        await pilot.press("n")
        await back_to(detail, "the detail after cancelling the stop")

        # A one-time enrollment code with its QR code (seeded, and the demo database is thrown away).
        await pilot.press("E")
        # On an active device the question offers to deactivate it first; `y` creates the code only.
        await scenes.wait_for(
            lambda: scenes.screen_is(app.screen, "ConfirmScreen") or scenes.screen_is(app.screen, "ChoiceScreen"),
            "the enrollment confirmation",
        )
        await pilot.press("y")
        await scenes.on_screen(pilot, "EnrollmentCodeScreen", what="the enrollment code")
        await shoot("enroll_qr.svg", modal=True)
        await pilot.press("escape")
        await back_to(detail, "the detail after the code")
        await pilot.press("escape")
        await scenes.show_users(pilot)

        await scenes.show_activity(pilot)
        await shoot("activity.svg")
        await scenes.show_settings(pilot)
        await shoot("settings.svg")
        await scenes.show_privacy(pilot)
        await shoot("privacy.svg")
        await scenes.show_audit(pilot)
        await shoot("audit.svg")
    return saved


def main() -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="protect-screenshots-") as tmp:
        try:
            with scenes.demo_backend(Path(tmp) / "protect.db", scenes.USERS) as demo:
                assert demo.victim is not None
                say(f"Demo ready: {scenes.USERS:,} users, activity made; victim {demo.victim.username}. Screenshots:")
                with scenes.console_time(demo):
                    saved = asyncio.run(take_screenshots(demo))
        except ApiError as exc:
            raise SystemExit(f"screenshots: the demo backend refused the setup: {exc}") from exc
    say(f"Wrote {len(saved)} SVGs to {OUT_DIR} in {time.perf_counter() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
