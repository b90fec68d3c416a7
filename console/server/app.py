"""The FastAPI application: the Protect MFA service and its admin API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from .clock import Clock
from .errors import install_error_handlers
from .routers import device, protect, pushendpoints, resource, systemusers
from .store import Store, open_store


ROUTERS = (systemusers.router, pushendpoints.router, protect.router, resource.router, device.router)


def create_app(store: Store | str | Path, *, clock: Clock | None = None) -> FastAPI:
    if not isinstance(store, Store):
        store = open_store(store)
    app = FastAPI(
        title="Protect MFA service",
        version="0.1.0",
        description="Push and TOTP multi-factor authentication with a JumpCloud-shaped admin API.",
    )
    app.state.store = store
    app.state.clock = clock or Clock()
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
