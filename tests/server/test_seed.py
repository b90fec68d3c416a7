"""The synthetic directory has the shape the brief asks for, seen through the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from console.client import ProtectClient


async def count(api: ProtectClient, *filters: str) -> int:
    return (await api.list_users(limit=1, filters=list(filters))).totalCount


async def test_seeded_directory_proportions(make_backend):
    backend = make_backend(users=3000, seed=3)
    async with ProtectClient(backend.url, backend.admin_key) as api:
        total = await count(api)
        assert total == 3000
        share = {
            "push": await count(api, "mfaEnrollment.pushStatus:$eq:ENROLLED") / total,
            "totp": await count(api, "mfaEnrollment.totpStatus:$eq:ENROLLED") / total,
            "webauthn": await count(api, "mfaEnrollment.webAuthnStatus:$eq:ENROLLED") / total,
            "none": await count(api, "mfaEnrollment.overallStatus:$ne:ENROLLED") / total,
        }
        assert 0.55 <= share["push"] <= 0.65, share
        assert 0.45 <= share["totp"] <= 0.55, share
        assert 0.07 <= share["webauthn"] <= 0.13, share
        assert 0.12 <= share["none"] <= 0.18, share

        privacy = await api.privacy_summary()
        assert 0.15 <= privacy.optedOut / privacy.devices <= 0.25
        assert privacy.diagnosticsStored > 0 and privacy.diagnosticsDropped > 0

        statuses = {
            s: (await api.push_attempts(status=s, limit=1)).totalCount
            for s in ("approved", "denied", "expired", "blocked")
        }
        assert all(statuses.values()), statuses

        # One push-bombing episode: one user, dozens of blocked/denied attempts within minutes.
        victim = backend.seed_report["bombingVictim"]
        since = datetime.now(UTC) - timedelta(hours=1)
        recent = await api.push_attempts(user_id=victim, since=since, limit=100)
        hostile = [a for a in recent.results if a.status in ("blocked", "denied")]
        assert len(hostile) >= 30
        assert max(a.createdAt for a in hostile) - min(a.createdAt for a in hostile) < timedelta(minutes=30)

        # Devices are varied, and the app versions/OS versions are realistic.
        devices = (await api.privacy_devices(limit=100)).results
        assert {d.device.os for d in devices} == {"iOS", "Android"}
        assert len({d.device.model for d in devices}) >= 8
