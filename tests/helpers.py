"""Test helpers that go through the real API (no shortcuts into the database)."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyotp
import pytest

from console.client import DeviceClient, ProtectClient
from console.models import DeviceInfo, SystemUserCreate

if TYPE_CHECKING:
    from console.server.store import Store

IPHONE = DeviceInfo(make="Apple", model="iPhone 15", os="iOS", osVersion="17.4", appVersion="2.6.0", uvEnabled=True)
PIXEL = DeviceInfo(make="Google", model="Pixel 8", os="Android", osVersion="14", appVersion="2.6.0", uvEnabled=False)


async def new_user(api: ProtectClient, name: str, **fields: str):
    return await api.create_user(
        SystemUserCreate(
            username=name,
            email=f"{name}@test.example",
            firstname=fields.get("first", "Test"),
            lastname=fields.get("last", "User"),
            displayname=fields.get("display", name),
        )
    )


async def enrolled_device(api: ProtectClient, url: str, user_id: str, device: DeviceInfo = IPHONE) -> DeviceClient:
    """Create an enrolment code as an admin and enrol a device with it, as the app does."""
    code = await api.create_enrollment(user_id)
    phone = DeviceClient(url)
    await phone.enroll(code.code, f"{device.model}", device)
    return phone


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, interval: float = 0.05
) -> None:
    """Poll until ``condition`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result  # type: ignore[misc]
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def point_cli_at(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, key: str, *, columns: int = 400) -> None:
    """Make ``console.cli.main`` talk to ``url`` with ``key``, ignoring the user's own config."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", str(columns))  # wide tables: assertions see whole values
    monkeypatch.setenv("PROTECT_CONSOLE_URL", url)
    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", key)
    for name in ("PROTECT_CONSOLE_PROFILE", "PROTECT_CONSOLE_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no TTY: changes need --yes


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    from console.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def unused_totp_users(store: Store, n: int) -> list[tuple[str, pyotp.TOTP]]:
    """``n`` users with TOTP enrolled and never verified, with their secret (opened as the bench does).

    Taken: their last step is set to 0, so no later call picks them (step 0 is long past, so any
    current code is still new)."""
    from sqlalchemy import select, update

    from console.server import secretbox
    from console.server.store import users

    with store.write() as conn:
        rows = conn.execute(
            select(users.c.id, users.c.totp_secret)
            .where(users.c.totp_status == "ENROLLED", users.c.totp_last_step.is_(None), users.c.totp_failures == 0)
            .order_by(users.c.id)
            .limit(n)
        ).all()
        conn.execute(update(users).where(users.c.id.in_([r.id for r in rows])).values(totp_last_step=0))
    assert len(rows) == n
    return [(r.id, pyotp.TOTP(secretbox.reveal(store, r.id, r.totp_secret))) for r in rows]
