"""The query parameters the listings share (users, push attempts, audit, privacy devices), declared once."""

from __future__ import annotations

from fastapi import Query

from ...models import PAGE_MAX

SKIP_MAX = 10_000_000
CURSOR_MAX = 4096  # characters: a cursor the service made is far shorter

Skip = Query(0, ge=0, le=SKIP_MAX, description="Rows to skip (after the cursor, when `after`/`before` is given).")
Limit = Query(10, ge=1, le=PAGE_MAX, description=f"Rows to return (1..{PAGE_MAX}).")
After = Query(
    None,
    max_length=CURSOR_MAX,
    description="Keyset paging: the rows after this cursor (a page's `endCursor`), in the request's order. "
    "The cursor must come from the same sort, search and filter (else 400).",
)
Before = Query(
    None,
    max_length=CURSOR_MAX,
    description="Keyset paging: the `limit` rows just before this cursor (a page's `startCursor`), still in the "
    "request's order; `end` gives the last page.",
)
Count = Query(True, description="false: do not count the matches (`totalCount` is then null); paging on is cheaper.")
