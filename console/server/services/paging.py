"""Keyset paging: opaque cursors and the SQL that resumes a listing after (or before) one.

A cursor is base64url of JSON ``{"k": [sort key values..., id], "f": fingerprint}``. The fingerprint
is a short hash of what the listing is (endpoint, sort, search, filters): a cursor from another
listing is refused (400 naming ``after``/``before``) instead of silently paging something else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, literal, or_, tuple_

from ..errors import bad_request

END = "end"  # before=end: the last page


@dataclass(frozen=True)
class Key:
    """One ORDER BY term of a listing: its expression and direction."""

    expr: Any
    descending: bool = False

    def order(self, reverse: bool = False) -> Any:
        return self.expr.desc() if self.descending != reverse else self.expr.asc()


def fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, default=str, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _wire(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def _unwire(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], str):
        return datetime.fromisoformat(value["t"])
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise ValueError("not a key value")


def encode(values: Sequence[Any], fp: str) -> str:
    raw = json.dumps({"k": [_wire(v) for v in values], "f": fp}, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str, fp: str, param: str, width: int) -> list[Any]:
    """The key values a cursor names, or a 400 naming ``param`` (malformed, or from another listing)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
        values = [_unwire(v) for v in doc["k"]]
        stamp = doc["f"]
    except (binascii.Error, ValueError, UnicodeDecodeError, KeyError, TypeError):
        raise bad_request(f"{param}: not a cursor from this listing (malformed)") from None
    if stamp != fp:
        raise bad_request(f"{param}: the cursor belongs to another sort, search or filter; start again without it")
    if len(values) != width:
        raise bad_request(f"{param}: not a cursor from this listing (wrong shape)")
    return values


def beyond(keys: Sequence[Key], values: Sequence[Any], *, reverse: bool = False) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the keys' order (strictly before with ``reverse``).

    All keys one way: a row-value comparison, which both stores answer by seeking the (keys) index.
    Mixed directions: ``k1 >= v1 AND (k1 > v1 OR (...))``; the leading term still gives an index range.
    """
    directions = {k.descending != reverse for k in keys}
    if len(directions) == 1:
        left = tuple_(*(k.expr for k in keys))
        right = tuple_(*(literal(v, k.expr.type) for k, v in zip(keys, values, strict=True)))
        return left < right if directions.pop() else left > right

    def nested(i: int) -> ColumnElement[bool]:
        key, value = keys[i], values[i]
        down = key.descending != reverse
        strict: ColumnElement[bool] = key.expr < value if down else key.expr > value
        if i == len(keys) - 1:
            return strict
        loose = key.expr <= value if down else key.expr >= value
        return and_(loose, or_(strict, nested(i + 1)))

    return nested(0)


def window(keys: Sequence[Key], fp: str, after: str | None, before: str | None) -> tuple[list[Any] | None, bool]:
    """(the cursor's key values or None, whether to read backwards) for a request's after/before."""
    if after is not None and before is not None:
        raise bad_request("after and before: give one of them, not both")
    if after is not None:
        return decode(after, fp, "after", len(keys)), False
    if before is not None:
        return (None if before == END else decode(before, fp, "before", len(keys))), True
    return None, False


def labels(keys: Sequence[Key]) -> list[Any]:
    """The key expressions to select beside a row's columns (its cursor is made from them)."""
    return [k.expr.label(f"_k{i}") for i, k in enumerate(keys)]


def read(
    conn: Any, query: Any, keys: Sequence[Key], bound: list[Any] | None, reverse: bool, skip: int, limit: int
) -> list[Any]:
    """``query`` (selecting :func:`labels`) in the keys' order, past ``bound``; rows in forward order."""
    if bound is not None:
        query = query.where(beyond(keys, bound, reverse=reverse))
    query = query.order_by(*(k.order(reverse) for k in keys)).offset(skip).limit(limit)
    rows = list(conn.execute(query))
    if reverse:
        rows.reverse()
    return rows


def ends(rows: Sequence[Any], keys: Sequence[Key], fp: str) -> dict[str, str | None]:
    """``startCursor``/``endCursor`` for a page of rows selected with :func:`labels`."""
    if not rows:
        return {"startCursor": None, "endCursor": None}

    def of(row: Any) -> str:
        return encode([row._mapping[f"_k{i}"] for i in range(len(keys))], fp)

    return {"startCursor": of(rows[0]), "endCursor": of(rows[-1])}
