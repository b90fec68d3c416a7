"""The client's side of issue 8: keyset pages, exact-key lookups, and the warm start, on the real service.

Keyset paging needs a server that returns cursors (the wire contract in /work/contract.md: `after`,
`before`, `before=end`, `count=false`, `startCursor`/`endCursor`). Against one that does not, the
client says so (``cursors=False``) and the tests about cursors are skipped, not faked.
"""

from __future__ import annotations

import pytest

from console.client import CURSOR_END, NotFound, ProtectClient, WarmStart, user_key_kind
from console.tui.startup import first_requests
from tests.helpers import new_user


def test_the_shape_of_the_text_decides_which_exact_key_it_could_be() -> None:
    assert user_key_kind("5f1d2c3b4a5f1d2c3b4a5f1d") == "id"
    assert user_key_kind("  wei.lewis99193 ") == "username"
    assert user_key_kind("Mary.Garcia@Example.com") == "email"
    assert user_key_kind("zoë@exámple.com") == "email"
    assert user_key_kind("x@y") == "username"  # no dot in the domain: not an email, may be a username
    for text in ("Mary Garcia", "", "   ", "a\x1bb"):
        assert user_key_kind(text) is None  # a search, never a key


async def test_lookup_by_email_username_or_id_is_exact_and_case_folded(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as api:
        user = await new_user(api, "weila.exact")
        await new_user(api, "weila.exact2")  # a longer username that the same search also finds
        assert (await api.lookup_user("weila.exact")).id == user.id
        assert (await api.lookup_user("WEILA.Exact")).id == user.id
        assert (await api.lookup_user("weila.exact@test.example")).id == user.id
        assert (await api.lookup_user(f" {user.id} ")).id == user.id
        assert await api.lookup_user("weila.exac") is None  # a prefix is a search, not a key
        assert await api.lookup_user("nobody@nowhere.example") is None
        assert await api.lookup_user("0" * 24) is None
        assert await api.lookup_user("two words") is None
        with pytest.raises(NotFound):
            await api.find_user("nobody@nowhere.example")


async def test_user_page_reads_totals_and_says_whether_the_server_pages_by_cursor(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as api:
        plain = await api.list_users(limit=100, sort="username")
        first = await api.user_page(limit=100, sort="username")
        assert first.total == plain.totalCount == backend.seed_report["users"]
        assert [u.id for u in first.results] == [u.id for u in plain.results]
        if first.cursors:
            assert first.start_cursor and first.end_cursor
        else:
            assert first.start_cursor is None and first.end_cursor is None


async def test_after_before_and_count_follow_the_wire_contract(backend) -> None:
    async with ProtectClient(backend.url, backend.admin_key) as api:
        first = await api.user_page(limit=100, sort="username")
        if not first.cursors:
            pytest.skip("this server has no keyset paging yet (server side of issue 8 item 2)")
        total = first.total
        by_skip = await api.list_users(skip=100, limit=100, sort="username")
        after = await api.user_page(limit=100, sort="username", after=first.end_cursor, count=False)
        assert after.total is None  # not counted
        assert [u.id for u in after.results] == [u.id for u in by_skip.results]
        # Two pages on from the first page's end cursor.
        jump = await api.user_page(limit=50, sort="username", after=first.end_cursor, skip=100, count=False)
        assert [u.id for u in jump.results] == [
            u.id for u in (await api.list_users(skip=200, limit=50, sort="username")).results
        ]
        # Back again: the page before the second page's start is the first page.
        back = await api.user_page(limit=100, sort="username", before=after.start_cursor, count=False)
        assert [u.id for u in back.results] == [u.id for u in first.results]
        # The last rows, in the list's order.
        tail = await api.user_page(limit=30, sort="username", before=CURSOR_END, count=False)
        expected = await api.list_users(skip=total - 30, limit=30, sort="username")
        assert [u.id for u in tail.results] == [u.id for u in expected.results]


async def test_a_warm_start_answers_the_first_screens_requests_once(backend) -> None:
    warm = WarmStart.begin(backend.url, backend.admin_key, first_requests())
    assert warm is not None  # a plain-http URL: worth it
    async with ProtectClient(backend.url, backend.admin_key, warm=warm) as api:
        sent: list[str] = []
        original = api._http.request

        async def spy(method, path, **kwargs):
            sent.append(path)
            return await original(method, path, **kwargs)

        api._http.request = spy  # type: ignore[method-assign]
        me = await api.whoami()
        page = await api.user_page(limit=100, sort="username")
        assert me.role and page.total == backend.seed_report["users"]
        assert sent == []  # both answered by the warm start
        await api.user_page(limit=100, sort="username")
        await api.whoami()
        assert sent == ["/api/systemusers", "/api/v2/protect/whoami"]  # each early answer is used once


async def test_a_warm_start_that_was_refused_is_not_used(backend) -> None:
    warm = WarmStart.begin(backend.url, "pc_not-a-real-key", first_requests())
    async with ProtectClient(backend.url, backend.admin_key, warm=warm) as api:
        # The early answer was a 401 for the wrong key: asked again, with this client's key.
        assert (await api.user_page(limit=100, sort="username")).total == backend.seed_report["users"]


def test_no_warm_start_over_tls_or_through_a_proxy(monkeypatch) -> None:
    assert WarmStart.begin("https://protect.example.com", "k", first_requests()) is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert WarmStart.begin("http://127.0.0.1:9", "k", first_requests()) is None
