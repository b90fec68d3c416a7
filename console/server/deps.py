"""The routes' dependencies, each named once (as the FastAPI template's ``api/deps.py``), so that a route's
parameters say what it uses and who may call it: ``actor: CanWriteUsers, store: StoreDep, clock: ClockDep``.

The ``Can*`` aliases admit a key whose role has that permission (``ROLE_PERMISSIONS`` in models.py decides
which roles do) and answer the calling key's :class:`Principal`. Each is one dependency shared by every route
that needs it; OpenAPI's 401 and 403 are derived from them as from ``Depends(require(...))`` (errors.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends

from ..models import Permission
from .auth import current_device, current_principal, get_clock, get_store, require, require_hot
from .clock import Clock
from .services.common import Principal
from .store import Store

StoreDep = Annotated[Store, Depends(get_store)]
ClockDep = Annotated[Clock, Depends(get_clock)]

Device = Annotated[Any, Depends(current_device)]  # the enrolled device's row (Authorization: Bearer <token>)
AnyKey = Annotated[Principal, Depends(current_principal)]  # any live API key, whatever its role

CanRead = Annotated[Principal, Depends(require(Permission.READ))]
CanWriteUsers = Annotated[Principal, Depends(require(Permission.USERS_WRITE))]
CanResetMfa = Annotated[Principal, Depends(require(Permission.MFA_RESET))]
CanResetTotp = Annotated[Principal, Depends(require(Permission.TOTP_RESET))]
CanUnenroll = Annotated[Principal, Depends(require(Permission.DEVICES_UNENROLL))]
CanWriteDevices = Annotated[Principal, Depends(require(Permission.DEVICES_WRITE))]
CanEnroll = Annotated[Principal, Depends(require(Permission.ENROLL))]
CanWriteSettings = Annotated[Principal, Depends(require(Permission.SETTINGS_WRITE))]
CanPush = Annotated[Principal, Depends(require(Permission.PUSH_CREATE))]
CanReadPush = Annotated[Principal, Depends(require(Permission.PUSH_CREATE, Permission.READ))]  # either permission
CanBlockPush = Annotated[Principal, Depends(require(Permission.PUSH_BLOCK))]
CanManageKeys = Annotated[Principal, Depends(require(Permission.KEYS_MANAGE))]
# The hot route's check: the key from the per-process cache, without a thread hop (auth.require_hot).
CanVerifyTotp = Annotated[Principal, Depends(require_hot(Permission.TOTP_VERIFY))]
