"""``protect-console demo``: the service in-process, synthetic users, live activity.

:class:`Simulator` plays the outside world against a running service, through
the same public APIs real callers use: applications' login flows create push
attempts (``service`` key), phones answer them (device API), one user is under
a push-bombing attack, and phones change their diagnostics choice. It runs in
its own thread with its own event loop so the console's loop never waits on it,
and it never raises: failures are counted in :attr:`Simulator.stats`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .client import ApiError, BackendUnavailable, DeviceClient, ProtectClient, RateLimited
from .models import DeviceInfo, SystemUser

if TYPE_CHECKING:
    from .server.store import DbTarget

# (make, model, os, OS versions the model runs) - all at or above the supported minimums.
PHONES: tuple[tuple[str, str, Literal["iOS", "Android"], tuple[str, ...]], ...] = (
    ("Apple", "iPhone 15 Pro", "iOS", ("17.5.1", "17.6", "18.1")),
    ("Apple", "iPhone 14", "iOS", ("16.7.8", "17.5.1", "18.0.1")),
    ("Apple", "iPhone 13 mini", "iOS", ("16.6", "17.4.1")),
    ("Apple", "iPhone SE (3rd generation)", "iOS", ("15.8", "16.7.8", "17.5.1")),
    ("Apple", "iPhone 12", "iOS", ("15.7.9", "16.7.8")),
    ("Samsung", "Galaxy S23 (SM-S911B)", "Android", ("13", "14")),
    ("Samsung", "Galaxy A54 5G (SM-A546B)", "Android", ("13", "14")),
    ("Google", "Pixel 8", "Android", ("14", "15")),
    ("Google", "Pixel 7a", "Android", ("13", "14")),
    ("OnePlus", "OnePlus 11 (CPH2449)", "Android", ("13", "14")),
    ("Xiaomi", "Redmi Note 12 (23021RAAEG)", "Android", ("12", "13")),
    ("Motorola", "moto g84 5G", "Android", ("13",)),
)
APP_VERSIONS = ("2.14.0", "2.13.2", "2.13.0", "2.12.1")

RESOURCES = (
    "Okta SSO",
    "VPN",
    "Salesforce",
    "GitHub",
    "AWS Console",
    "Workday",
    "Slack",
    "Google Workspace",
    "Zoom",
    "Jira",
    "User Portal",
    "macOS login",
)
APPS = (
    "Chrome 126 on macOS",
    "Safari 17 on macOS",
    "Edge 125 on Windows 11",
    "Firefox 127 on Ubuntu",
    "GlobalProtect 6.2",
    "Cisco AnyConnect 4.10",
    "Chrome 126 on Windows 11",
    "JumpCloud Go",
)
LOCATIONS = (
    "Denver, CO, US",
    "Boulder, CO, US",
    "Austin, TX, US",
    "New York, NY, US",
    "London, GB",
    "Dublin, IE",
    "Berlin, DE",
    "Toronto, CA",
    "Bengaluru, IN",
    "Sydney, AU",
)
# The attacker signs in from far away, on a hosting provider, again and again.
ATTACK_RESOURCE = "VPN"
ATTACK_CONTEXT = {"app": "Unknown browser on Linux", "location": "Unknown (hosting provider)", "ip": "203.0.113.66"}

COUNTERS = (
    "cycles",
    "devices_enrolled",
    "pushes_created",
    "pushes_blocked",
    "approved",
    "denied",
    "ignored",
    "fraud_reports",
    "attack_bursts",
    "diagnostics_sent",
    "diagnostics_stored",
    "diagnostics_dropped",
    "diagnostics_toggles",
    "refused",
    "phones_retired",
    "errors",
)
# A phone's own calls answered with these mean its device is gone (unenrolled, MFA reset, user deleted
# or deactivated from the console): that phone stops, which is the demo working, not an error.
DEVICE_GONE = (400, 401, 403, 404, 409, 410)


@dataclass
class _Planned:
    """What a phone's owner will do with one push, and when."""

    attempt_id: str
    due: float
    decision: str  # approve | deny | ignore
    report_fraud: bool = False


@dataclass
class _Phone:
    user_id: str
    username: str
    info: DeviceInfo
    client: DeviceClient
    opted_out: bool = False
    plans: list[_Planned] = field(default_factory=list)


class Simulator:
    """Background logins, answers, an attack and privacy changes against a live service."""

    MAX_PLANS_PER_PHONE = 20  # bounded memory whatever the service does

    def __init__(
        self,
        url: str,
        service_key: str,
        admin_key: str,
        *,
        devices: int = 40,
        interval: tuple[float, float] = (0.5, 2.0),
        response_delay: tuple[float, float] = (1.0, 6.0),
        attack_every: tuple[float, float] = (8.0, 20.0),
        victim_reports: float = 0.75,
        rng_seed: int | None = None,
    ) -> None:
        self.url = url
        self._service_key = service_key
        self._admin_key = admin_key
        self.devices = devices
        self.interval = interval
        self.response_delay = response_delay
        self.attack_every = attack_every
        self.victim_reports = victim_reports  # share of admitted attack pushes denied as fraud (the rest ignored)
        self._rng = random.Random(rng_seed)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self.last_error: str | None = None
        self.error_kinds: collections.Counter[str] = collections.Counter()  # "what it was doing: error" -> count
        self.victim: str | None = None  # user id of the push-bombing target
        self._phones: list[_Phone] = []
        self._next_attack = 0.0  # the first burst comes straight away: the activity view has a story at once
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._stopping = threading.Event()
        self.finished = threading.Event()

    # ------------------------------------------------------------ thread API
    def start(self) -> None:
        """Run in a daemon thread with its own event loop."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._thread = threading.Thread(target=self._thread_main, name="protect-simulator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and wait for the thread; safe to call twice or before start."""
        self._stopping.set()
        if self._thread is None:
            return
        self._started.wait(timeout)
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self.run())
            self._started.set()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
        except BaseException as exc:  # noqa: BLE001 - the demo must outlive its simulator
            self._failed(exc)
        finally:
            self._started.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # ----------------------------------------------------------- observing
    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters."""
        return dict(self._counts)

    def wait_until(self, predicate: Callable[[dict[str, int]], bool], timeout: float) -> bool:
        """Block until ``predicate(stats)`` holds (checked after every cycle) or ``timeout`` passes."""
        with self._changed:
            return self._changed.wait_for(
                lambda: predicate(self.stats) or self.finished.is_set(), timeout
            ) and predicate(self.stats)

    def _count(self, name: str, n: int = 1) -> None:
        self._counts[name] += n

    def _failed(self, exc: BaseException, doing: str = "simulating") -> None:
        self._counts["errors"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        status = getattr(exc, "status", 0)
        kind = type(exc).__name__ + (f" {status}" if status else "")
        if isinstance(exc, BackendUnavailable):
            kind += " (the service did not answer)"
        self.error_kinds[f"{doing}: {kind}"] += 1

    def _retire(self, phone: _Phone) -> None:
        """The phone's device is gone (removed from the console): it stops taking part."""
        if phone in self._phones and len(self._phones) > 1:
            self._phones.remove(phone)
            self._count("phones_retired")
            if phone.user_id == self.victim:
                self.victim = None  # the attack on them ends with their device

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------- the run
    async def run(self) -> None:
        """The whole simulation; returns when stopped (or cancelled)."""
        admin = ProtectClient(self.url, self._admin_key, retries=1)
        service = ProtectClient(self.url, self._service_key, retries=1)
        try:
            while not self._phones and not self._stopping.is_set():
                await self._enroll_phones(admin)
                if not self._phones:
                    await asyncio.sleep(2.0)  # service not ready yet: try again
            while not self._stopping.is_set():
                try:
                    await self._cycle(service)
                except Exception as exc:  # noqa: BLE001 - e.g. the service went away: count it, keep going
                    self._failed(exc, "one round of logins")
                self._count("cycles")
                self._notify()
                await asyncio.sleep(self._rng.uniform(*self.interval))
        finally:
            self.finished.set()
            self._notify()
            for closing in (admin, service, *(p.client for p in self._phones)):
                with contextlib.suppress(Exception):
                    await closing.aclose()

    async def _enroll_phones(self, admin: ProtectClient) -> None:
        try:
            candidates = await self._pick_users(admin)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, "picking users to enroll")
            return
        gate = asyncio.Semaphore(6)

        async def enroll(user: SystemUser) -> None:
            async with gate:
                phone = await self._enroll_one(admin, user)
            if phone is not None:
                self._phones.append(phone)
                self._count("devices_enrolled")

        await asyncio.gather(*(enroll(u) for u in candidates))
        if self._phones:
            self.victim = self._rng.choice(self._phones).user_id

    async def _pick_users(self, admin: ProtectClient) -> list[SystemUser]:
        """Activated users from several random windows, so the simulated crowd spans the directory."""
        active = ["state:$eq:ACTIVATED"]
        total = (await admin.list_users(limit=1, filters=active)).totalCount or 0  # counted: count=true by default
        windows = 5
        per_window = -(-self.devices // windows)  # ceiling
        chosen: dict[str, SystemUser] = {}
        for _ in range(windows * 2):  # a few spare windows in case some overlap
            if len(chosen) >= self.devices or total == 0:
                break
            skip = self._rng.randrange(max(1, total - per_window * 4 + 1))
            page = await admin.list_users(skip=skip, limit=min(100, per_window * 4), filters=active)
            for user in self._rng.sample(page.results, min(per_window, len(page.results))):
                chosen.setdefault(user.id, user)
        return list(chosen.values())[: self.devices]

    async def _enroll_one(self, admin: ProtectClient, user: SystemUser) -> _Phone | None:
        make, model, os_name, versions = self._rng.choice(PHONES)
        info = DeviceInfo(
            make=make,
            model=model,
            os=os_name,
            osVersion=self._rng.choice(versions),
            appVersion=self._rng.choice(APP_VERSIONS),
            uvEnabled=self._rng.random() < 0.7,
        )
        owner = (user.firstname or user.username)[:40]
        device = DeviceClient(self.url, retries=1)
        try:
            code = await admin.create_enrollment(user.id)
            await device.enroll(code.code, f"{owner}'s {model.split(' (')[0]}", info)
            opted_out = self._rng.random() < 0.2  # about one in five say no to diagnostics at set-up
            if opted_out:
                await device.settings(diagnostics_opt_out=True)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, "enrolling a phone")
            await device.aclose()
            return None
        return _Phone(user.id, user.username, info, device, opted_out=opted_out)

    async def _cycle(self, service: ProtectClient) -> None:
        now = time.monotonic()
        bystanders = [p for p in self._phones if p.user_id != self.victim] or self._phones
        for _ in range(self._rng.choice((1, 1, 2, 3))):
            await self._login(service, self._rng.choice(bystanders), now)
        if self.victim is not None and now >= self._next_attack:
            await self._attack(service, now)
        await self._answer(now)
        if self._rng.random() < 0.3:
            await self._diagnostics(self._rng.choice(self._phones))

    async def _push(self, service: ProtectClient, phone: _Phone, resource: str, context: dict[str, str]) -> str | None:
        try:
            created = await service.create_push(phone.user_id, resource, **context)
        except RateLimited:
            self._count("pushes_blocked")  # the cap (or a block) did its job; the service recorded it
            return None
        except BackendUnavailable:
            raise
        except ApiError as exc:
            if exc.status in DEVICE_GONE:
                self._retire(phone)  # e.g. unenrolled or reset from the console: no device to push to
                return None
            raise
        self._count("pushes_created")
        return created.id

    async def _login(self, service: ProtectClient, phone: _Phone, now: float) -> None:
        context = {
            "app": self._rng.choice(APPS),
            "location": self._rng.choice(LOCATIONS),
            "ip": f"198.51.100.{self._rng.randrange(1, 255)}",
        }
        attempt_id = await self._push(service, phone, self._rng.choice(RESOURCES), context)
        if attempt_id is None:
            return
        roll = self._rng.random()
        decision = "approve" if roll < 0.78 else "deny" if roll < 0.85 else "ignore"
        self._plan(phone, _Planned(attempt_id, now + self._rng.uniform(*self.response_delay), decision))

    async def _attack(self, service: ProtectClient, now: float) -> None:
        victim = next((p for p in self._phones if p.user_id == self.victim), None)
        if victim is None:
            return
        self._count("attack_bursts")
        self._next_attack = now + self._rng.uniform(*self.attack_every)
        for _ in range(self._rng.randint(4, 9)):
            attempt_id = await self._push(service, victim, ATTACK_RESOURCE, ATTACK_CONTEXT)
            if attempt_id is not None:
                # The victim denies and reports most as fraud and ignores the rest, which then
                # hold the cap until they expire: the blocked bursts the console should flag.
                fraud = self._rng.random() < self.victim_reports
                decision = "deny" if fraud else "ignore"
                self._plan(victim, _Planned(attempt_id, now + self._rng.uniform(*self.response_delay), decision, fraud))

    def _plan(self, phone: _Phone, plan: _Planned) -> None:
        phone.plans.append(plan)
        del phone.plans[: -self.MAX_PLANS_PER_PHONE]

    async def _answer(self, now: float) -> None:
        for phone in list(self._phones):  # a phone may retire meanwhile
            due = [p for p in phone.plans if p.due <= now]
            if not due:
                continue
            phone.plans = [p for p in phone.plans if p.due > now]
            try:
                # Like the app: fetch what is pending (lost notifications included), then answer.
                pending = {push.id for push in await phone.client.pushes()}
            except BackendUnavailable:
                raise
            except ApiError as exc:
                if exc.status in DEVICE_GONE:
                    self._retire(phone)
                else:
                    self._failed(exc, "fetching a phone's pushes")
                continue
            for plan in due:
                if plan.decision == "ignore" or plan.attempt_id not in pending:
                    self._count("ignored")  # left to expire on the server's clock
                    continue
                try:
                    await phone.client.respond(
                        plan.attempt_id,
                        plan.decision,
                        user_verified=phone.info.uvEnabled,
                        report_fraud=plan.report_fraud,
                    )
                except BackendUnavailable:
                    raise
                except ApiError:
                    self._count("refused")  # e.g. biometric required but off on this phone
                    continue
                self._count("approved" if plan.decision == "approve" else "denied")
                if plan.report_fraud:
                    self._count("fraud_reports")

    async def _diagnostics(self, phone: _Phone) -> None:
        try:
            if self._rng.random() < 0.25:
                await phone.client.settings(diagnostics_opt_out=not phone.opted_out)
                phone.opted_out = not phone.opted_out  # only once the service has it
                self._count("diagnostics_toggles")
            accepted = await phone.client.diagnostics(
                {
                    "event": self._rng.choice(("app_open", "push_received", "push_answered", "biometric_prompt")),
                    "appVersion": phone.info.appVersion,
                    "os": f"{phone.info.os} {phone.info.osVersion}",
                    "latencyMs": self._rng.randrange(80, 2500),
                }
            )
            self._count("diagnostics_sent")
            self._count("diagnostics_stored" if accepted.stored else "diagnostics_dropped")
        except BackendUnavailable:
            raise
        except ApiError as exc:
            if exc.status in DEVICE_GONE:
                self._retire(phone)
            else:
                self._failed(exc, "sending diagnostics")


# ---------------------------------------------------------------- the demo


def _count_users(store: Any) -> int:
    from .server.services.users import count_users

    with store.read() as conn:
        return count_users(conn)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class DemoServices:
    """A running demo backend: where it is, the console's key, and the simulator."""

    url: str
    db: Path | DbTarget
    role: str
    console_key: str = field(repr=False)
    simulator: Simulator
    seeded: int  # users written by this run (0 when the database already had users)


@contextlib.contextmanager
def demo_services(
    *,
    db: Path | DbTarget | None,
    users: int = 5000,
    role: str = "admin",
    port: int = 0,
    simulator_options: dict[str, Any] | None = None,
) -> Iterator[DemoServices]:
    """Seed (unless ``db`` already has users), serve on loopback, simulate; undo it all on exit."""
    import tempfile

    from .server.app import create_app
    from .server.runner import ServerThread
    from .server.seed import seed_directory
    from .server.services.keys import create_key
    from .server.store import open_store

    with contextlib.ExitStack() as stack:  # unwinds in reverse: simulator, server, store, temp dir
        if db is None:
            db = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="protect-demo-"))) / "protect.db"
        store = open_store(db)
        stack.callback(store.dispose)
        seeded = 0
        existing = _count_users(store)
        if existing:
            _say(f"Using {db}: {existing:,} users already there, not seeding.")
        else:
            _say(f"Seeding {users:,} synthetic users into {db} ...")
            started = time.perf_counter()
            seed_directory(store, users, rng_seed=1)
            seeded = users
            _say(f"Seeded in {time.perf_counter() - started:.1f} s.")
        console_key = create_key(store, f"demo console ({role})", role)
        service_key = create_key(store, "demo simulator: logins", "service")
        simulator_admin_key = create_key(store, "demo simulator: enrolment", "admin")

        server = ServerThread(create_app(store), host="127.0.0.1", port=port)
        url = server.start()
        stack.callback(server.stop)

        simulator = Simulator(url, service_key, simulator_admin_key, **(simulator_options or {}))
        simulator.start()
        stack.callback(simulator.stop)
        yield DemoServices(url=url, db=db, role=role, console_key=console_key, simulator=simulator, seeded=seeded)


@contextlib.contextmanager
def _quit_on_termination(app: Any) -> Iterator[None]:
    """SIGTERM/SIGHUP (a closed SSH session) quit the console, so the temp database is still removed."""
    import signal

    def quit_app(signum: int, frame: object) -> None:
        try:
            loop = asyncio.get_running_loop()  # the handler runs on the main thread, inside the app's loop
        except RuntimeError:
            raise KeyboardInterrupt from None
        loop.call_soon_threadsafe(app.exit)

    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {sig: signal.signal(sig, quit_app) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(*, db: Path | DbTarget | None, users: int = 5000, role: str = "admin", port: int = 0) -> int:
    """Serve a seeded database on loopback, simulate activity, and run the console until it quits."""
    from .config import ConnectionProfile

    with demo_services(db=db, users=users, role=role, port=port) as demo:
        _say(f"Protect service on {demo.url}; opening the console ({role} key) ...")
        from .tui.app import ProtectConsoleApp  # Textual only now

        profile = ConnectionProfile(name="demo", url=demo.url, api_key=demo.console_key, readonly=role == "readonly")
        app = ProtectConsoleApp(profile)
        with _quit_on_termination(app):
            app.run()
        summary = closing_summary(demo.simulator.stats, demo.simulator.error_kinds)
    _say(summary)
    return app.return_code or 0


def closing_summary(stats: dict[str, int], error_kinds: collections.Counter[str] | None = None) -> str:
    """The demo's last words: what the simulated world did, and what went wrong in it (and why), if anything."""
    line = (
        f"Demo over: {stats['pushes_created']} pushes sent, {stats['pushes_blocked']} refused by the push "
        f"limits, {stats['approved']} approved, {stats['denied']} denied."
    )
    retired = stats.get("phones_retired", 0)
    if retired:
        line += (
            f" {retired} simulated phone{'s' if retired != 1 else ''} stopped after "
            f"{'their devices were' if retired != 1 else 'its device was'} removed in the console."
        )
    errors = stats.get("errors", 0)
    if errors:
        kinds = (error_kinds or collections.Counter()).most_common(3)
        detail = "; ".join(f"{count} x {kind}" for kind, count in kinds) or "no detail recorded"
        line += (
            f"\nThe simulator (not the console) had {errors} failed call{'s' if errors != 1 else ''}: {detail}."
            " The console and the service were not affected."
        )
    return line
