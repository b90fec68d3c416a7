"""ctrl+p: every action the current screen offers, the screens, and user lookup on the server.

The palette runs each search in its own (cancelled when superseded) worker, so
the user lookup simply waits a moment and asks the server; user data shows as
literal ``Content``, never as markup (the palette parses plain strings).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content

from ..client import ApiError, user_key_kind
from ..display import enrollment_text, user_name
from ..models import SystemUser
from ..safe_text import printable
from .screens.base import console_app_of
from .tabs import TABS

# Frame keys that mean nothing from the palette: Esc would close the palette, not go back.
PALETTE_SKIPS = frozenset({"escape"})

LOOKUP_DEBOUNCE = 0.25
EXACT_DEBOUNCE = 0.05  # an exact id/email/username is one indexed request: asked almost at once
LOOKUP_LIMIT = 8


class ConsoleCommands(Provider):
    """Screen actions (respecting permissions), screen switches, and "open user …"."""

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = console_app_of(self.screen)
        commands: list[tuple[str, Callable[[], object], str]] = []
        screen = self.screen
        seen: set[str] = set()
        # The screen the palette was opened on: only bindings check_action allows (hidden ones never show).
        for active in screen.active_bindings.values():
            binding = active.binding
            if active.node is not screen or not active.enabled or not binding.show or not binding.description:
                continue
            if binding.action in seen or binding.action.startswith("app.") or binding.action in PALETTE_SKIPS:
                continue
            seen.add(binding.action)
            title = getattr(screen, "TITLE", "") or "Screen"
            # The tooltip, when a binding has one, is the longer wording ("Deactivate the push device").
            what = binding.tooltip or binding.description
            commands.append((f"{title}: {what}", partial(active.node.run_action, binding.action), f"key {binding.key}"))
        for tab in TABS:
            commands.append((f"Go to {tab.label}", partial(app.action_show_screen, tab.mode), f"key {tab.key}"))
        commands.append(("Help: keys for this screen", app.action_help, "key ?"))
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, text=name, help=help_text)
        term = query.strip()
        if len(term) < 2:
            return
        app = console_app_of(self.screen)
        exact_id: str | None = None
        if user_key_kind(term) is not None:
            # The user whose id, email or username this is, first and at once (a unique index answers).
            await asyncio.sleep(EXACT_DEBOUNCE)
            try:
                exact = await app.api.lookup_user(term)
            except ApiError:
                exact = None  # the search below reports the failure
            if exact is not None:
                exact_id = exact.id
                yield self._user_hit(exact, 1.0)
        # The palette cancels this search when the query changes: a cheap debounce.
        await asyncio.sleep(LOOKUP_DEBOUNCE)
        try:
            page = await app.api.list_users(search=term, limit=LOOKUP_LIMIT)
        except ApiError as exc:
            message = Content(f"User lookup failed: {printable(str(exc), max_length=120)}")
            yield Hit(0.01, message, lambda: None, text="User lookup failed")
            return
        for rank, user in enumerate(page.results):
            if user.id != exact_id:
                yield self._user_hit(user, 0.9 - rank * 0.01)

    def _user_hit(self, user: SystemUser, score: float) -> Hit:
        app = console_app_of(self.screen)
        username = printable(user.username, max_length=60)
        email = printable(user.email, max_length=60)
        name = printable(user_name(user), max_length=60)
        display = Content.assemble(
            ("Open user ", "dim"), (username, "bold"), f"  {name}  <{email}>" if name else f"  <{email}>"
        )
        # As the Users table spells statuses; `help` is parsed as markup by the palette, Content is not.
        help_text = Content(user_statuses(user))
        return Hit(
            score,
            display,
            partial(app.open_user, user.id),
            text=f"Open user {username}",
            help=help_text,  # type: ignore[arg-type]
        )


def user_statuses(user: SystemUser) -> str:
    """``push ✓ · TOTP — · WebAuthn — · locked``: the Users table's words, for a palette line."""
    enrollment = user.mfaEnrollment
    parts = [
        f"push {enrollment_text(enrollment.pushStatus).plain}",
        f"TOTP {enrollment_text(enrollment.totpStatus).plain}",
        f"WebAuthn {enrollment_text(enrollment.webAuthnStatus).plain}",
    ]
    lock = user.totpLock
    if lock.locked:
        parts[1] = "TOTP locked"
    elif lock.failures:
        parts[1] += f" ({lock.failures} of {lock.maxFailures} failures)"
    if user.state != "ACTIVATED":
        parts.append(printable(user.state).lower())
    if user.account_locked:
        parts.append("account locked")
    return " · ".join(parts)
