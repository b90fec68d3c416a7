"""What the console's first screen asks the server, and its memory policy: known before Textual is imported.

``protect-console`` sends these from a thread (:class:`console.client.WarmStart`) while the UI
loads; the Users screen asks for exactly the same (it takes its page size and default sort from
here), so the answers are waiting when it does. No Textual import here: that is the point.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from ..client import Params

USERS_PAGE_SIZE = 100
USERS_DEFAULT_SORT = "username"  # a key of users.SORT_FIELDS whose server field has the same name

# Python's cyclic garbage collector, in a console (measured with bench/console_start.py and
# console_keys.py, 2 cores): during start-up it ran dozens of times over the objects the imports
# were creating (~50 ms of the ~450 ms of CPU to the first rows), and afterwards each full collection
# walked every module, class and function loaded (100-300 ms pauses while PgDn was held; a young
# collection every ~2 keys). So: no collection while the console starts; once the first screen has
# settled, what exists then (imports, the first screen) is frozen out of all later collections, and
# young collections run after 10,000 new objects rather than 700. Refcounting frees everything else as
# before; the collector only looks for cycles, fewer and later.
SETTLE_AFTER = 1.0  # seconds after the app mounts (the first rows are on screen well before)
KEY_GC_THRESHOLDS = (10_000, 20, 20)


# Young objects a key's frame may leave before the collector is worth running between keys: a
# scrolling key makes ~1,000-3,000, the rows drawn ahead while keys rest a few thousand more.
IDLE_COLLECT_AFTER = 2_000


def first_requests() -> list[tuple[str, Params]]:
    """whoami, then the Users screen's first page (with the total) in its default order."""
    from ..client import ProtectClient

    return [
        (ProtectClient.WHOAMI_PATH, []),
        ProtectClient.user_page_request(skip=0, limit=USERS_PAGE_SIZE, sort=USERS_DEFAULT_SORT),
    ]


def next_requests(path: str, params: Params, answer: httpx.Response) -> list[tuple[str, Params]]:
    """After the first page: the pages the Users table asks for as soon as it is in, by its cursors.

    The table (widgets/virtual_table.py) prefetches, before the first frame is drawn, the page after
    the first one (``after`` its end cursor) and the last page (``before=end``, as many rows as the
    last page holds), neither counted. Answered early too, the first frame needs no request of the
    console's own (its async HTTP machinery, ~30 ms of imports, loads after it). Should the table ask
    otherwise, these answers go unused and it asks as usual (tests/tui/test_start_warm.py notices).
    """
    from ..client import CURSOR_END, ProtectClient

    if (path, params) != first_requests()[1]:
        return []
    body = answer.json()
    end = body.get("endCursor") if isinstance(body, dict) else None
    total = body.get("totalCount") if isinstance(body, dict) else None
    if not isinstance(end, str) or not isinstance(total, int) or total <= USERS_PAGE_SIZE:
        return []  # one page in all, or a server without cursors: nothing more is asked at once
    size, sort = USERS_PAGE_SIZE, USERS_DEFAULT_SORT
    requests = [ProtectClient.user_page_request(limit=size, sort=sort, after=end, count=False)]
    last = (total - 1) // size
    if last >= 3:  # (nearer, the table asks for it after its neighbour's cursor instead)
        rows = total - last * size
        requests.append(ProtectClient.user_page_request(limit=rows, sort=sort, before=CURSOR_END, count=False))
    return requests


@contextmanager
def console_memory() -> Iterator[None]:
    """Around a console session (the CLI, before the UI's imports): no cyclic collection until the app
    calls :func:`settle_memory`; afterwards the interpreter's own settings again."""
    thresholds = gc.get_threshold()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        gc.enable()


def settle_memory() -> None:
    """Freeze what start-up made (never garbage worth looking for) and collect the rest less often."""
    gc.freeze()
    gc.set_threshold(*KEY_GC_THRESHOLDS)
    gc.enable()


def collect_while_idle() -> None:
    """Run now, while the keys rest, the collection that the next objects made would start inside a
    key's frame (3-25 ms there): the youngest generation, and an older one whose turn it would be."""
    if not gc.isenabled():
        return  # start-up, before settle_memory
    young, middle, old = gc.get_count()
    if young < IDLE_COLLECT_AFTER:
        return
    _threshold0, threshold1, threshold2 = gc.get_threshold()
    generation = 0
    if middle + 1 >= threshold1:
        generation = 2 if old + 1 >= threshold2 else 1
    gc.collect(generation)
