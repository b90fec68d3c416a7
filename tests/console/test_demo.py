"""The demo simulator and orchestration against a real service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from console.client import BackendUnavailable, ProtectClient
from console.demo import PHONES, Simulator, closing_summary, demo_services

T = TypeVar("T")

# Fast enough for tests, same behaviour as the demo's defaults.
FAST = {"devices": 6, "interval": (0.02, 0.06), "response_delay": (0.0, 0.1), "attack_every": (0.2, 0.4), "rng_seed": 3}


def api(url: str, key: str, call: Callable[[ProtectClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with ProtectClient(url, key, retries=0) as client:
            return await call(client)

    return asyncio.run(go())


@pytest.fixture
def simulator(backend: Any) -> Any:
    sims: list[Simulator] = []

    def make(**options: Any) -> Simulator:
        sim = Simulator(backend.url, backend.key("service"), backend.admin_key, **{**FAST, **options})
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.stop()


def test_simulator_produces_push_activity(backend: Any, simulator: Any) -> None:
    started = datetime.now(UTC).replace(microsecond=0)
    sim = simulator(victim_reports=1.0)
    sim.start()
    reached = sim.wait_until(
        lambda s: s["cycles"] >= 5 and s["approved"] >= 1 and s["fraud_reports"] >= 1 and s["pushes_blocked"] >= 1,
        timeout=60,
    )
    sim.stop()
    assert reached, (sim.stats, sim.last_error)
    assert sim.finished.is_set()
    stats = sim.stats
    assert stats["devices_enrolled"] == 6
    assert stats["errors"] == 0, sim.last_error

    # The server saw it all through its public APIs.
    recent = api(backend.url, backend.admin_key, lambda c: c.push_attempts(since=started, limit=100))
    statuses = {a.status.value for a in recent.results}
    assert {"approved", "blocked"} <= statuses
    victim = api(
        backend.url, backend.admin_key, lambda c: c.push_attempts(user_id=sim.victim, since=started, limit=100)
    )
    assert any(a.fraud and a.status == "denied" for a in victim.results)
    assert sum(a.status == "blocked" for a in victim.results) >= 1
    assert {a.resource for a in victim.results} == {"VPN"}  # bystanders get the ordinary logins

    device = api(backend.url, backend.admin_key, lambda c: c.push_endpoints(sim.victim))[0]
    assert (device.device.make, device.device.model) in {(make, model) for make, model, _, _ in PHONES}


def test_simulator_changes_diagnostics_choices(backend: Any, simulator: Any) -> None:
    stored_before = api(backend.url, backend.admin_key, lambda c: c.privacy_summary()).diagnosticsStored
    sim = simulator()
    sim.start()
    reached = sim.wait_until(
        lambda s: s["diagnostics_toggles"] >= 1 and s["diagnostics_stored"] >= 1 and s["diagnostics_dropped"] >= 1,
        timeout=60,
    )
    sim.stop()
    assert reached, (sim.stats, sim.last_error)
    stats = sim.stats
    summary = api(backend.url, backend.admin_key, lambda c: c.privacy_summary())
    assert summary.diagnosticsStored - stored_before == stats["diagnostics_stored"]  # opted-out reports not stored
    for phone in sim._phones:  # the server agrees with every phone's last choice
        device = api(backend.url, backend.admin_key, lambda c, user_id=phone.user_id: c.push_endpoints(user_id))[0]
        assert device.privacy.diagnosticsOptOut is phone.opted_out


def test_simulator_survives_an_outage(backend: Any, simulator: Any) -> None:
    sim = simulator()
    sim.start()
    assert sim.wait_until(lambda s: s["pushes_created"] >= 2, timeout=60), sim.stats
    errors_before = sim.stats["errors"]
    backend.stop()
    assert sim.wait_until(lambda s: s["errors"] > errors_before, timeout=30), sim.stats
    assert "cannot reach" in (sim.last_error or "")
    backend.restart()
    created = sim.stats["pushes_created"]
    assert sim.wait_until(lambda s: s["pushes_created"] > created + 2, timeout=30), (sim.stats, sim.last_error)
    assert sim._thread is not None and sim._thread.is_alive()


def test_stop_is_prompt_and_idempotent(backend: Any, simulator: Any) -> None:
    Simulator(backend.url, "k", "k").stop()  # before start: nothing to do
    sim = simulator(interval=(5.0, 5.0))  # asleep between cycles when stopped
    sim.start()
    assert sim.wait_until(lambda s: s["cycles"] >= 1, timeout=60)
    began = time.monotonic()
    sim.stop()
    assert time.monotonic() - began < 3
    assert sim._thread is not None and not sim._thread.is_alive()
    assert sim.finished.is_set()
    sim.stop()


def test_demo_services_seed_serve_simulate_and_clean_up(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    with demo_services(db=db, users=60, role="helpdesk", simulator_options=FAST) as demo:
        assert demo.seeded == 60
        me = api(demo.url, demo.console_key, lambda c: c.whoami())
        assert me.role == "helpdesk"
        assert api(demo.url, demo.console_key, lambda c: c.list_users(limit=1)).totalCount == 60
        assert demo.simulator.wait_until(lambda s: s["pushes_created"] >= 1, timeout=60), demo.simulator.stats
        url, key, sim = demo.url, demo.console_key, demo.simulator
    assert sim.finished.is_set()
    with pytest.raises(BackendUnavailable):
        api(url, key, lambda c: c.whoami())

    # An existing database is reused as it is.
    with demo_services(db=db, users=500, role="readonly", simulator_options=FAST) as again:
        assert again.seeded == 0
        assert api(again.url, again.console_key, lambda c: c.list_users(limit=1)).totalCount == 60
        assert api(again.url, again.console_key, lambda c: c.whoami()).role == "readonly"


def test_demo_in_a_temporary_directory_is_removed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with demo_services(db=None, users=20, simulator_options=FAST) as demo:
        assert demo.db.exists() and demo.db.parent.parent == tmp_path
        directory = demo.db.parent
    assert not directory.exists()


def test_a_phone_whose_device_the_console_removes_stops_without_counting_errors(backend: Any, simulator: Any) -> None:
    """The demo's closing line said `N simulator errors` after an admin unenrolled or reset a simulated user:
    the phone kept calling with a device that no longer exists. It now stops, and the line says why."""
    sim = simulator()
    sim.start()
    assert sim.wait_until(lambda s: s["pushes_created"] >= 3, timeout=60), (sim.stats, sim.last_error)
    gone = sim._phones[0]
    api(backend.url, backend.admin_key, lambda c: c.reset_mfa(gone.user_id))  # what R does in the console
    assert sim.wait_until(lambda s: s["phones_retired"] >= 1, timeout=60), (sim.stats, sim.last_error)
    created = sim.stats["pushes_created"]
    assert sim.wait_until(lambda s: s["pushes_created"] > created + 2, timeout=60), (sim.stats, sim.last_error)
    sim.stop()
    assert sim.stats["errors"] == 0, (sim.error_kinds, sim.last_error)
    line = closing_summary(sim.stats, sim.error_kinds)
    assert "stopped after its device was removed in the console" in line
    assert "error" not in line and "failed" not in line


def test_the_closing_line_explains_errors_or_has_none(backend: Any, simulator: Any) -> None:
    sim = simulator()
    sim.start()
    assert sim.wait_until(lambda s: s["pushes_created"] >= 2, timeout=60), sim.stats
    assert "fail" not in closing_summary(sim.stats, sim.error_kinds)
    backend.stop()
    assert sim.wait_until(lambda s: s["errors"] >= 1, timeout=30), sim.stats
    sim.stop()
    line = closing_summary(sim.stats, sim.error_kinds)
    assert "The simulator (not the console) had" in line
    assert "the service did not answer" in line  # what the failure was, not just a count
    backend.restart()
