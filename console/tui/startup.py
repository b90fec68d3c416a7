"""What the console's first screen asks the server, known before Textual is imported.

``protect-console`` sends these from a thread (:class:`console.client.WarmStart`) while the UI
loads; the Users screen asks for exactly the same (it takes its page size and default sort from
here), so the answers are waiting when it does. No Textual import here: that is the point.
"""

from __future__ import annotations

from ..client import Params, ProtectClient

USERS_PAGE_SIZE = 100
USERS_DEFAULT_SORT = "username"  # a key of users.SORT_FIELDS whose server field has the same name


def first_requests() -> list[tuple[str, Params]]:
    """whoami, then the Users screen's first page (with the total) in its default order."""
    return [
        (ProtectClient.WHOAMI_PATH, []),
        ProtectClient.user_page_request(skip=0, limit=USERS_PAGE_SIZE, sort=USERS_DEFAULT_SORT),
    ]
