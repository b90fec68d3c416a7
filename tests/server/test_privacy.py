"""Rule 7: opted-out devices' diagnostics are counted and dropped, never stored."""

from __future__ import annotations

from sqlalchemy import func, select

from console.client import ProtectClient
from console.server.store import diagnostics
from tests.helpers import enrolled_device, new_user


def stored_reports(backend) -> int:
    with backend.store.read() as conn:
        return conn.execute(select(func.count()).select_from(diagnostics)).scalar_one()


async def test_opted_out_diagnostics_are_counted_and_dropped(backend):
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        user = await new_user(admin, "privacy")
        phone = await enrolled_device(admin, backend.url, user.id)
        before = await admin.privacy_summary()

        assert (await phone.diagnostics({"crash": "stack", "battery": 40})).stored is True
        assert stored_reports(backend) == before.diagnosticsStored + 1

        await phone.settings(diagnostics_opt_out=True)
        endpoint = (await admin.push_endpoints(user.id))[0]
        assert endpoint.privacy.diagnosticsOptOut is True and endpoint.privacy.updatedAt is not None
        assert (await phone.diagnostics({"crash": "again"})).stored is False
        assert stored_reports(backend) == before.diagnosticsStored + 1

        after = await admin.privacy_summary()
        assert after.diagnosticsDropped == before.diagnosticsDropped + 1
        assert after.optedOut == before.optedOut + 1
        assert after.devices == after.optedIn + after.optedOut

        opted_out = await admin.privacy_devices(opted_out=True, limit=100)
        assert opted_out.totalCount == after.optedOut
        assert all(d.privacy.diagnosticsOptOut for d in opted_out.results)
        await phone.aclose()
