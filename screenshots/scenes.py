"""The console's demo scenes, the same every run: shared by ``make_screenshots.py`` and ``tests/tui/test_snapshots.py``.

Determinism, on both sides of the wire:

- **Data**: the directory is seeded with a fixed seed, and the live activity (phones, pushes, answers,
  admin actions) is made by :func:`make_activity` with its own fixed seed, through the real API.
- **Service clock**: the service runs in-process with a :class:`ManualClock` that starts at :data:`START`
  and moves only when :func:`make_activity` advances it, a fixed step per call, so every stored time and
  every pending/expired status is the same each run.
- **Ids, keys and codes**: while the demo runs, the service's modules draw them from a seeded generator
  (:func:`seeded_secrets`; the audit log shows key ids, the enrolment modal a code and its QR).
- **Console clock**: :func:`console_time` makes the console's "now" (``console.display.now``) the service
  clock's (times shown relative to now, "today" for time-only stamps, the push-bombing window), its zone UTC,
  and stops the activity screen's "updated 0s ago".
- **URL**: the console shows :data:`SHOWN_URL`; its client reaches the real service on 127.0.0.1 and
  whatever free port it got through :class:`PortTransport` (the port differs per run and per xdist worker).

Every wait is on a condition (data on screen, a modal open), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from console.client import DeviceClient, ProtectClient, RateLimited
from console.config import DEFAULT_URL, ConnectionProfile
from console.demo import APPS, ATTACK_CONTEXT, LOCATIONS, PHONES, RESOURCES
from console.models import DeviceInfo, Role, SystemUser

if TYPE_CHECKING:
    from textual.pilot import Pilot

    from console.server.clock import ManualClock
    from console.tui.app import ProtectConsoleApp
    from console.tui.widgets.virtual_table import VirtualTable

START = datetime(2026, 3, 2, 9, 30)  # the service clock at seeding (naive UTC, as the service keeps time)
STEP = timedelta(seconds=7)  # the service clock between two calls of the activity (times differ, order is total)
BURST_STEP = timedelta(seconds=1)  # ...and within the push-bombing burst (the pushes must overlap to hit the cap)
SEED = 1  # the seeded directory, and so the seeded push-bombing victim, are the same every run
SCRIPT_SEED = 11  # choices made by make_activity (who gets a phone, which pushes they answer)
LIVE_PHONES = 6
USERS = 5000  # the directory's size, as `protect-console demo` seeds it
SHOWN_URL = DEFAULT_URL  # the URL the console shows and names in its messages
TIMEOUT = 20.0


@dataclass
class Demo:
    url: str  # where the service really listens
    clock: ManualClock
    console_key: str = field(repr=False)
    setup_key: str = field(repr=False)
    service_key: str = field(repr=False)
    victim: SystemUser | None = None  # the seeded push-bombing victim (the attack goes on "now")
    no_device: SystemUser | None = None  # an active user with no phone

    @property
    def secrets(self) -> list[str]:
        return [self.console_key, self.setup_key, self.service_key]

    @property
    def port(self) -> int:
        return httpx.URL(self.url).port or 80

    def now(self) -> datetime:
        """The service clock's now, as an aware UTC time."""
        return self.clock.now().replace(tzinfo=UTC)


# ---------------------------------------------------------------- the service


@contextlib.contextmanager
def demo_backend(db: Path, users: int) -> Iterator[Demo]:
    """The service on 127.0.0.1 over a new SQLite file ``db``: ``users`` seeded users, then :func:`make_activity`."""
    from console.server.app import create_app
    from console.server.clock import ManualClock
    from console.server.runner import ServerThread
    from console.server.seed import seed_directory
    from console.server.services.keys import create_key
    from console.server.store import open_store

    clock = ManualClock(START)
    store = open_store(db)
    server: ServerThread | None = None

    def key(name: str, role: Role) -> str:
        clock.advance(STEP.total_seconds())
        return create_key(store, name, role, clock=clock)

    try:
        with seeded_secrets():
            seed_directory(store, users, rng_seed=SEED, clock=clock)
            server = ServerThread(create_app(store, clock=clock))
            demo = Demo(
                url=server.start(),
                clock=clock,
                console_key=key("demo console", Role.ADMIN),
                setup_key=key("demo setup", Role.ADMIN),
                service_key=key("demo logins", Role.SERVICE),
            )
            asyncio.run(make_activity(demo))
            yield demo
    finally:
        if server is not None:
            server.stop()
        store.dispose()


class SeededSecrets:
    """What the service's modules use of :mod:`secrets`, drawn from a seeded generator: the ids, key
    prefixes and enrolment codes the console shows are the same every run (a throwaway demo database only)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # the service answers in its own thread

    def token_bytes(self, nbytes: int) -> bytes:
        with self._lock:
            return self._rng.randbytes(nbytes)

    def token_hex(self, nbytes: int) -> str:
        return self.token_bytes(nbytes).hex()

    def token_urlsafe(self, nbytes: int) -> str:
        return base64.urlsafe_b64encode(self.token_bytes(nbytes)).rstrip(b"=").decode()


# The service modules that draw ids, API keys and enrolment codes from `secrets`.
_SECRETS_MODULES = ("console.server.services.common", "console.server.services.keys", "console.server.services.devices")


@contextlib.contextmanager
def seeded_secrets(seed: int = SCRIPT_SEED) -> Iterator[None]:
    """:class:`SeededSecrets` in place of :mod:`secrets` in the service's id and key makers, while in the block."""
    import importlib

    fake = SeededSecrets(seed)
    modules: list[Any] = [importlib.import_module(name) for name in _SECRETS_MODULES]
    saved = [(module, module.secrets) for module in modules]
    try:
        for module in modules:
            module.secrets = fake
        yield
    finally:
        for module, original in saved:
            module.secrets = original


async def make_activity(demo: Demo) -> None:
    """Phones, pushes and answers, a push-bombing burst and two admin actions, all through the API.

    The service clock moves one :data:`STEP` before each call that stores a time."""
    rng = random.Random(SCRIPT_SEED)
    clock = demo.clock
    admin = ProtectClient(demo.url, demo.setup_key)
    service = ProtectClient(demo.url, demo.service_key, retries=0)
    phones: list[tuple[SystemUser, DeviceInfo, DeviceClient]] = []

    def tick(step: timedelta = STEP) -> None:
        clock.advance(step.total_seconds())

    try:
        # Admin actions for the audit log: raise the concurrent-push cap, reset one user's TOTP.
        _settings, etag = await admin.get_settings()
        tick()
        await admin.update_settings({"push": {"concurrentLimit": {"max": 2}}}, etag)
        totp_users = await admin.list_users(
            filters=["state:$eq:ACTIVATED", "mfaEnrollment.totpStatus:$eq:ENROLLED"], sort="username", skip=40, limit=1
        )
        tick()
        await admin.reset_totp(totp_users.results[0].id)

        # A few users without a phone enroll one, as the app does: admin code, then the device API.
        # Picked from across the directory (not one alphabetical run), the same ones every time.
        no_phone = ["state:$eq:ACTIVATED", "mfaEnrollment.pushStatus:$eq:NOT_ENROLLED"]
        total = (await admin.list_users(filters=no_phone, limit=1)).totalCount
        assert total is not None
        chosen: list[SystemUser] = []
        for skip in sorted(rng.sample(range(total), LIVE_PHONES)):
            chosen.extend((await admin.list_users(filters=no_phone, sort="username", skip=skip, limit=1)).results)
        for user in chosen:
            make, model, os_name, versions = rng.choice(PHONES)
            info = DeviceInfo(
                make=make,
                model=model,
                os=os_name,
                osVersion=rng.choice(versions),
                appVersion="2.14.0",
                uvEnabled=rng.random() < 0.7,
            )
            tick()
            code = await admin.create_enrollment(user.id)
            phone = DeviceClient(demo.url)
            tick()
            await phone.enroll(code.code, model, info)
            phones.append((user, info, phone))

        # Logins: each phone gets two or three pushes, answered mostly yes; one left pending.
        for n, (user, info, phone) in enumerate(phones):
            for _ in range(rng.choice((2, 3))):
                tick()
                created = await service.create_push(
                    user.id,
                    rng.choice(RESOURCES),
                    app=rng.choice(APPS),
                    location=rng.choice(LOCATIONS),
                    ip=f"198.51.100.{rng.randrange(1, 255)}",
                )
                if n == 0:
                    continue  # pending: the user has not looked at the phone yet
                roll = rng.random()
                decision = "approve" if roll < 0.8 else "deny"
                tick()
                await phone.respond(
                    created.id, decision, user_verified=info.uvEnabled, report_fraud=decision == "deny" and roll > 0.9
                )
        # Privacy: one phone opts out of diagnostics (its reports are dropped); the others send a few.
        for n, (_user, info, phone) in enumerate(phones):
            if n == 1:
                tick()
                await phone.settings(diagnostics_opt_out=True)
            for event in ("app_open", "push_received", "push_answered"):
                report = {
                    "event": event,
                    "appVersion": info.appVersion,
                    "os": f"{info.os} {info.osVersion}",
                    "latencyMs": rng.randrange(80, 2500),
                }
                tick()
                await phone.diagnostics(report)

        # The seeded victim of push bombing: the user with the most blocked pushes in the last hour.
        since = demo.now() - timedelta(hours=1)
        blocked = await admin.push_attempts(status="blocked", since=since, limit=100)
        victim_id, _count = Counter(a.userId for a in blocked.results).most_common(1)[0]
        demo.victim = await admin.get_user(victim_id)
        # ...and the attack goes on right now: two pushes fill the cap, the rest are blocked.
        for _ in range(6):
            tick(BURST_STEP)
            try:
                await service.create_push(victim_id, "VPN", **ATTACK_CONTEXT)
            except RateLimited:
                pass
        # Someone who never had a phone, for the detail screen without a device.
        demo.no_device = (
            await admin.list_users(
                filters=[*no_phone, "mfaEnrollment.totpStatus:$eq:NOT_ENROLLED"], sort="username", limit=1
            )
        ).results[0]
    finally:
        for closing in (admin, service, *(phone for _u, _i, phone in phones)):
            await closing.aclose()


# ---------------------------------------------------------------- the console


class PortTransport(httpx.AsyncBaseTransport):
    """Sends the console's requests for :data:`SHOWN_URL` to 127.0.0.1:``port``, over real TCP.

    No keep-alive: no connection outlives the app's event loop (the app does not close a client it was given)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(host="127.0.0.1", port=self.port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def closed_port() -> int:
    """A loopback port nothing listens on (just freed): the backend that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def console_app(
    demo: Demo, *, port: int | None = None, retries: int = 3, open_user: str | None = None
) -> ProtectConsoleApp:
    """The real console with the demo's admin key, showing :data:`SHOWN_URL`.

    ``port``: another one (a dead one); ``open_user``: a user to open at start, as ``protect-console --user``."""
    from console.tui.app import ProtectConsoleApp

    client = ProtectClient(SHOWN_URL, demo.console_key, transport=PortTransport(port or demo.port), retries=retries)
    profile = ConnectionProfile("demo", SHOWN_URL, demo.console_key)
    return ProtectConsoleApp(profile, client=client, open_user=open_user)


@contextlib.contextmanager
def console_time(demo: Demo) -> Iterator[None]:
    """The console's clock stopped at the service clock's now, and its local zone UTC, while in the block.

    ``console.display.now`` is the one clock every relative time reads, called through the module, so one patch
    stops it. A console module holding its own copy of it (``from ...display import now``) or reading
    ``datetime.now`` itself would make the shots depend on the day they are taken: it is refused, named. The activity screen's
    monotonic clock, which ages its data ("updated 0s ago"), is stopped as well."""
    import importlib

    readers = [module.__name__ for module in wall_clock_readers()]
    if readers:
        raise RuntimeError(f"read the time through console.display.now, not datetime.now: {', '.join(readers)}")
    saved: list[tuple[Any, str, Any]] = []

    def patch(module: Any, attribute: str, value: Any) -> None:
        saved.append((module, attribute, getattr(module, attribute)))
        setattr(module, attribute, value)

    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        display = importlib.import_module("console.display")
        copies = [f"{module.__name__}.{name}" for module, name in _names_of(display.now) if module is not display]
        if copies:
            raise RuntimeError(f"call console.display.now() through the module, not a copy: {', '.join(copies)}")
        patch(display, "now", demo.now)
        activity = importlib.import_module("console.tui.screens.activity")
        patch(activity, "time", _FrozenTime(time.monotonic()))
        yield
    finally:
        for module, attribute, value in reversed(saved):
            setattr(module, attribute, value)
        if old_tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old_tz
        time.tzset()


def _console_modules() -> list[Any]:
    """The console's modules but the service's, all imported."""
    import importlib
    import pkgutil

    import console

    names = [info.name for info in pkgutil.walk_packages(console.__path__, "console.") if not info.ispkg]
    return [
        importlib.import_module(name) for name in names if not name.startswith(("console.server.", "console.__main__"))
    ]


def _names_of(value: object) -> list[tuple[Any, str]]:
    """Every (module, attribute) of the console that holds ``value``."""
    return [(module, name) for module in _console_modules() for name, held in vars(module).items() if held is value]


def wall_clock_readers() -> list[Any]:
    """The console modules (not the service's, not ``console.display``) that call ``datetime.now`` themselves."""
    found = []
    for module in _console_modules():
        if module.__name__ == "console.display" or getattr(module, "datetime", None) is not datetime:
            continue
        if "datetime.now(" in Path(module.__file__ or "").read_text(encoding="utf-8"):
            found.append(module)
    return found


class _FrozenTime:
    def __init__(self, at: float) -> None:
        self._at = at

    def monotonic(self) -> float:
        return self._at


# ---------------------------------------------------------------- getting to each screen


async def wait_for(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"scenes: timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def settle(pilot: Pilot[Any], *, modal: bool = False) -> None:
    """Let running loads finish and the screen repaint.

    With a modal up, the action worker that opened it is waiting on the modal, so it is not waited for.
    (Polled, not ``workers.wait_for_complete()``: that raises when a search cancels its previous worker.)"""
    from textual.widgets import Input

    app = pilot.app
    await wait_for(
        lambda: all(w.is_finished or (modal and w.group == "detail-action") for w in app.workers), "workers to finish"
    )
    for screen in app.screen_stack:
        for box in screen.query(Input):
            box.cursor_blink = False  # a blinking cursor is on or off depending on when the shot is taken
    await pilot.pause()
    await pilot.pause()


def rows_loaded(table: VirtualTable) -> bool:
    """The table knows its total and has every row it shows."""
    return table.total is not None and all(table.row_at(i) is not None for i in table.visible_rows())


def screen_is(screen: object, class_name: str) -> bool:
    """Whether ``screen`` is a ``class_name`` (by name: the console's modules may move, the screens keep their names)."""
    return any(cls.__name__ == class_name for cls in type(screen).__mro__)


async def on_screen(pilot: Pilot[Any], class_name: str, ready: Callable[[Any], object] = bool, what: str = "") -> Any:
    """Wait for a ``class_name`` screen in front and ``ready(screen)``; the screen."""
    app = pilot.app
    await wait_for(lambda: screen_is(app.screen, class_name) and ready(app.screen), what or class_name)
    return app.screen


def _has_push(user: SystemUser) -> bool:
    from console.models import EnrollmentStatus

    return user.mfaEnrollment.pushStatus in (EnrollmentStatus.ENROLLED, EnrollmentStatus.PENDING_ACTIVATION)


def users_ready(screen: Any) -> bool:
    """The users table is loaded, the key's role known, and the device column filled for the rows shown."""
    if screen.app.whoami is None or not rows_loaded(screen.table):
        return False
    if not (screen.table.shows("device") or screen.table.shows("last_used")):
        return True
    shown = [screen.table.row_at(i) for i in screen.table.visible_rows()]
    return all(row.id in screen.devices for row in shown if row is not None and _has_push(row))


async def show_users(pilot: Pilot[Any]) -> Any:
    screen = await on_screen(pilot, "UsersScreen", users_ready, "the users table")
    await settle(pilot)
    return screen


async def search(pilot: Pilot[Any], term: str) -> Any:
    """`/` and ``term``: the results (or "no match") once the search has answered."""
    users = await show_users(pilot)
    await pilot.press("slash", *term)
    await wait_for(lambda: users.search_term == term and users_ready(users), f"the results for {term!r}")
    await settle(pilot)
    return users


async def open_user(pilot: Pilot[Any], user: SystemUser) -> Any:
    """Search for ``user``'s username and open them from the results, as an admin would."""
    await search(pilot, user.username)
    return await open_from_results(pilot, user)


async def open_from_results(pilot: Pilot[Any], user: SystemUser) -> Any:
    """Open ``user`` from the search results on screen: Enter on one match, else down to their row first."""
    app = pilot.app
    users = await on_screen(pilot, "UsersScreen")

    def row_id(index: int) -> str | None:
        row = users.table.row_at(index)
        return row.id if row is not None else None

    def opened() -> bool:
        return screen_is(app.screen, "UserDetailScreen")

    await wait_for(lambda: any(row_id(i) == user.id for i in users.table.visible_rows()), f"{user.username}'s row")
    await pilot.press("enter")  # one match: opens it; several: search box -> results
    await wait_for(lambda: opened() or users.table.has_focus, "the results or the user")
    if not opened():
        for _ in users.table.visible_rows():
            if row_id(users.table.cursor_row) == user.id:
                break
            await pilot.press("down")
        await pilot.press("enter")
    detail = await on_screen(pilot, "UserDetailScreen", lambda s: s.user is not None, "the user detail")
    assert detail.user.id == user.id, f"opened {detail.user.username}, not {user.username}"
    await settle(pilot)
    return detail


async def show_user(pilot: Pilot[Any], user: SystemUser) -> Any:
    """The detail of ``user``, opened at start (:func:`console_app`'s ``open_user``)."""
    detail = await on_screen(
        pilot, "UserDetailScreen", lambda s: s.user is not None and s.app.whoami is not None, "the user detail"
    )
    assert detail.user.id == user.id, f"opened {detail.user.username}, not {user.username}"
    await settle(pilot)
    return detail


async def ask_to_reset(pilot: Pilot[Any]) -> Any:
    """On the user detail, the question before a destructive action: reset TOTP if enrolled, else unenroll."""
    from console.models import EnrollmentStatus

    detail = await on_screen(pilot, "UserDetailScreen", lambda s: s.user is not None)
    await pilot.press("T" if detail.user.mfaEnrollment.totpStatus == EnrollmentStatus.ENROLLED else "U")
    confirm = await on_screen(
        pilot,
        "ConfirmScreen",
        lambda s: s.focused is not None and s.focused.id == "cancel",
        "the confirmation, Cancel focused",
    )
    await settle(pilot, modal=True)
    return confirm


async def ask_to_stop_attack(pilot: Pilot[Any]) -> Any:
    """On the user detail, `X`: the one question before stopping a push attack (Cancel focused)."""
    await on_screen(pilot, "UserDetailScreen", lambda s: s.user is not None)
    await pilot.press("X")
    question = await on_screen(
        pilot,
        "StopAttackScreen",
        lambda s: s.focused is not None and s.focused.id == "cancel",
        "the stop-attack question, Cancel focused",
    )
    await settle(pilot, modal=True)
    return question


async def show_activity(pilot: Pilot[Any]) -> Any:
    await pilot.press("2")
    screen = await on_screen(
        pilot,
        "ActivityScreen",
        lambda s: rows_loaded(s.table) and s.panel.checked and s.updated_at is not None,
        "push attempts and the push-bombing panel",
    )
    await settle(pilot)
    return screen


async def show_settings(pilot: Pilot[Any]) -> Any:
    await pilot.press("3")
    screen = await on_screen(pilot, "SettingsScreen", lambda s: s.settings is not None, "the settings")
    await settle(pilot)
    return screen


async def show_privacy(pilot: Pilot[Any]) -> Any:
    await pilot.press("4")
    screen = await on_screen(
        pilot, "PrivacyScreen", lambda s: s.summary is not None and rows_loaded(s.table), "privacy data"
    )
    await settle(pilot)
    return screen


async def show_audit(pilot: Pilot[Any]) -> Any:
    await pilot.press("5")
    screen = await on_screen(
        pilot, "AuditScreen", lambda s: rows_loaded(s.table) and (s.table.total or 0) > 0, "audit events"
    )
    await settle(pilot)
    return screen


async def show_help(pilot: Pilot[Any]) -> Any:
    await pilot.press("question_mark")
    screen = await on_screen(pilot, "HelpScreen", what="the help")
    await settle(pilot)
    return screen


async def show_error_banner(pilot: Pilot[Any]) -> Any:
    """A console whose backend is down (see :func:`closed_port`): the users screen's banner."""
    screen = await on_screen(pilot, "UsersScreen", lambda s: s.query_one("#error-banner").showing, "the error banner")
    await settle(pilot)
    return screen
