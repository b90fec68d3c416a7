"""Wire models: the contract between the service and its clients.

The server validates requests and shapes responses with these; the client
parses responses into them. Field names follow JumpCloud's public API where a
JumpCloud shape exists (``_id``, ``totalCount``, ``mfaEnrollment``...), so they
are camelCase on purpose. No server or UI imports here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

T = TypeVar("T")

NAME_MAX = 1024  # users edit their names in the portal: any Unicode up to this length


def _no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; refuse it everywhere so both stores agree.
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class Wire(BaseModel):
    """Base for response models: tolerant of fields added by newer servers."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class Strict(BaseModel):
    """Base for request bodies: unknown fields are an error naming the field."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class Page(Wire, Generic[T]):
    """JumpCloud's list envelope, with keyset cursors where the listing has them.

    ``startCursor``/``endCursor`` name the first and last row of ``results``: pass one as ``after``
    (or ``before``) to get the next (or previous) page. An empty page carries neither (the envelope is
    then JumpCloud's own); ``totalCount`` is null when the request said ``count=false``.
    """

    totalCount: int | None = Field(description="Rows matching in all; null when the request said count=false.")
    results: list[T]
    # Left out when null (an empty page): a page without rows is exactly JumpCloud's envelope.
    startCursor: str | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Cursor of the first row of `results` (pass it as `before`); absent when there are no rows.",
    )
    endCursor: str | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Cursor of the last row of `results` (pass it as `after`); absent when there are no rows.",
    )


class ErrorBody(Wire):
    message: str
    retryAfter: int | None = None
    blockedUntil: datetime | None = None  # 429 while a Stop-attack block is in force


# --------------------------------------------------------------------- users


class UserState(StrEnum):
    STAGED = "STAGED"
    ACTIVATED = "ACTIVATED"
    SUSPENDED = "SUSPENDED"


class EnrollmentStatus(StrEnum):
    NOT_ENROLLED = "NOT_ENROLLED"
    DISABLED = "DISABLED"
    PENDING_ACTIVATION = "PENDING_ACTIVATION"
    ENROLLMENT_EXPIRED = "ENROLLMENT_EXPIRED"
    IN_ENROLLMENT = "IN_ENROLLMENT"
    PRE_ENROLLMENT = "PRE_ENROLLMENT"
    ENROLLED = "ENROLLED"


class Mfa(Wire):
    configured: bool = False
    exclusion: bool = False
    exclusionUntil: datetime | None = None


class MfaEnrollment(Wire):
    overallStatus: EnrollmentStatus = EnrollmentStatus.NOT_ENROLLED
    totpStatus: EnrollmentStatus = EnrollmentStatus.NOT_ENROLLED
    pushStatus: EnrollmentStatus = EnrollmentStatus.NOT_ENROLLED
    webAuthnStatus: EnrollmentStatus = EnrollmentStatus.NOT_ENROLLED


class TotpLockState(Wire):
    """How close a user's TOTP is to locking (computed with the maxFailures setting in force)."""

    failures: int = 0  # consecutive wrong codes so far
    maxFailures: int = 5  # the setting in force
    locked: bool = False  # failures >= maxFailures: every code is refused until a reset


class PushBlock(Wire):
    """An active block on new pushes for one user (set by Stop attack)."""

    blockedUntil: datetime
    blockedBy: str  # the API key's name
    blockedAt: datetime


class SystemUser(Wire):
    id: str = Field(alias="_id")
    username: str
    email: str
    firstname: str = ""
    lastname: str = ""
    displayname: str = ""
    state: UserState = UserState.ACTIVATED
    account_locked: bool = False
    created: datetime
    totp_enabled: bool = False
    mfa: Mfa = Field(default_factory=Mfa)
    mfaEnrollment: MfaEnrollment = Field(default_factory=MfaEnrollment)
    # Protect additions (JumpCloud clients ignore them):
    totpLock: TotpLockState = Field(default_factory=TotpLockState)
    pushBlock: PushBlock | None = None  # only while a block is in force
    requireUserVerification: bool = False  # per-user biometric requirement (set by Stop attack)


class UserRef(Wire):
    id: str = Field(alias="_id")
    username: str
    email: str
    displayname: str = ""


class _UserFields(Strict):
    @field_validator("username", "email", "firstname", "lastname", "displayname", check_fields=False)
    @classmethod
    def _check_text(cls, value: str | None) -> str | None:
        return _no_nul(value)

    @field_validator("email", check_fields=False)
    @classmethod
    def _check_email(cls, value: str | None) -> str | None:
        if value is None:
            return value
        local, sep, domain = value.partition("@")
        if not sep or not local or "." not in domain or any(c.isspace() for c in value):
            raise ValueError("must be an email address like name@example.com")
        return value

    @field_validator("username", check_fields=False)
    @classmethod
    def _check_username(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c.isspace() or ord(c) < 32 for c in value)):
            raise ValueError("must be non-empty with no spaces or control characters")
        return value


class SystemUserCreate(_UserFields):
    username: str = Field(min_length=1, max_length=NAME_MAX)
    email: str = Field(min_length=3, max_length=254)
    firstname: str = Field("", max_length=NAME_MAX)
    lastname: str = Field("", max_length=NAME_MAX)
    displayname: str = Field("", max_length=NAME_MAX)


class SystemUserUpdate(_UserFields):
    username: str | None = Field(None, min_length=1, max_length=NAME_MAX)
    email: str | None = Field(None, min_length=3, max_length=254)
    firstname: str | None = Field(None, max_length=NAME_MAX)
    lastname: str | None = Field(None, max_length=NAME_MAX)
    displayname: str | None = Field(None, max_length=NAME_MAX)
    state: UserState | None = None
    account_locked: bool | None = None
    requireUserVerification: bool | None = None  # Protect: per-user biometric requirement for approvals


class SearchFilter(Strict):
    searchTerm: str = Field("", max_length=NAME_MAX)
    fields: list[Literal["username", "email", "firstname", "lastname", "displayname"]] = Field(
        default_factory=lambda: ["username", "email", "firstname", "lastname"], max_length=5
    )


class UserSearch(Strict):
    """Body of ``POST /api/search/systemusers``.

    ``filter`` is a mapping of field -> value (equality) or field -> {"$op": value},
    over the same fields as the list endpoint's ``filter`` parameter.
    """

    searchFilter: SearchFilter = Field(default_factory=SearchFilter)
    filter: dict[str, Any] | None = None


class ResetMfaRequest(Strict):
    exclusion: bool = False
    exclusionDays: int | None = Field(None, ge=1, le=365)
    exclusionUntil: datetime | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "ResetMfaRequest":
        if self.exclusionDays is not None and self.exclusionUntil is not None:
            raise ValueError("give exclusionDays or exclusionUntil, not both")
        return self


class TotpResetResult(Wire):
    userId: str
    totpStatus: EnrollmentStatus
    changed: bool = True  # False: the user had no TOTP (nothing changed, no audit event)


# ------------------------------------------------------------- push devices


class DeviceInfo(Strict):
    make: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=NAME_MAX)
    os: Literal["iOS", "Android"]
    osVersion: str = Field(min_length=1, max_length=32)
    appVersion: str = Field(min_length=1, max_length=32)
    uvEnabled: bool = False

    @field_validator("make", "model", "osVersion", "appVersion")
    @classmethod
    def _check_text(cls, value: str) -> str:
        return _no_nul(value)  # type: ignore[return-value]


class DevicePrivacy(Wire):
    diagnosticsOptOut: bool = False
    updatedAt: datetime | None = None


class PushEndpoint(Wire):
    id: str
    name: str
    state: Literal["active", "inactive"]
    enrollmentDate: datetime
    lastUsedDate: datetime | None = None
    device: DeviceInfo
    privacy: DevicePrivacy = Field(default_factory=DevicePrivacy)

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class PushEndpointPatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=NAME_MAX)
    state: Literal["active", "inactive"] | None = None

    @field_validator("name")
    @classmethod
    def _check_text(cls, value: str | None) -> str | None:
        return _no_nul(value)


class PrivacyDevice(PushEndpoint):
    user: UserRef


class PrivacySummary(Wire):
    devices: int
    optedOut: int
    optedIn: int
    diagnosticsStored: int = 0
    diagnosticsDropped: int = 0


# ----------------------------------------------------------------- settings


class ConcurrentLimit(Strict):
    enabled: bool = True
    max: int = Field(1, ge=1, le=10, description="Pending pushes allowed per user and resource in the window.")


class PushSettings(Strict):
    concurrentLimit: ConcurrentLimit = Field(default_factory=ConcurrentLimit)
    timeoutSeconds: int = Field(60, ge=30, le=300, description="How long a push can be answered.")
    requireUserVerification: bool = Field(False, description="Approvals must carry biometric/passcode verification.")


class TotpSettings(Strict):
    maxFailures: int = Field(5, ge=1, le=20, description="Consecutive bad codes before TOTP locks until reset.")


class ProtectSettings(Strict):
    push: PushSettings = Field(default_factory=PushSettings)
    totp: TotpSettings = Field(default_factory=TotpSettings)


class ConcurrentLimitPatch(Strict):
    enabled: bool | None = None
    max: int | None = Field(None, ge=1, le=10)


class PushSettingsPatch(Strict):
    concurrentLimit: ConcurrentLimitPatch | None = None
    timeoutSeconds: int | None = Field(None, ge=30, le=300)
    requireUserVerification: bool | None = None


class TotpSettingsPatch(Strict):
    maxFailures: int | None = Field(None, ge=1, le=20)


class ProtectSettingsPatch(Strict):
    push: PushSettingsPatch | None = None
    totp: TotpSettingsPatch | None = None


# Allowed ranges, for clients that explain the settings (the console, the CLI).
SETTING_RANGES: dict[str, tuple[int, int]] = {
    "push.concurrentLimit.max": (1, 10),
    "push.timeoutSeconds": (30, 300),
    "totp.maxFailures": (1, 20),
}


# ---------------------------------------------------------- identity, audit


class Role(StrEnum):
    ADMIN = "admin"
    HELPDESK = "helpdesk"
    READONLY = "readonly"
    SERVICE = "service"


class Permission(StrEnum):
    READ = "read"
    USERS_WRITE = "users.write"
    MFA_RESET = "mfa.reset"
    TOTP_RESET = "totp.reset"
    DEVICES_UNENROLL = "devices.unenroll"
    DEVICES_WRITE = "devices.write"
    ENROLL = "enroll"
    TOTP_VERIFY = "totp.verify"
    SETTINGS_WRITE = "settings.write"
    PUSH_CREATE = "push.create"
    PUSH_BLOCK = "push.block"
    KEYS_MANAGE = "keys.manage"  # list, create, rotate and revoke API keys (admin only)


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.HELPDESK: frozenset(
        {
            Permission.READ,
            Permission.MFA_RESET,
            Permission.TOTP_RESET,
            Permission.DEVICES_UNENROLL,
            Permission.ENROLL,
            Permission.TOTP_VERIFY,
            Permission.PUSH_BLOCK,
        }
    ),
    Role.READONLY: frozenset({Permission.READ}),
    Role.SERVICE: frozenset({Permission.PUSH_CREATE, Permission.TOTP_VERIFY}),
}


class WhoAmI(Wire):
    name: str
    role: Role
    permissions: list[Permission] = Field(default_factory=list)


class AuditEvent(Wire):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    targetName: str | None = None  # the username when the target is a user, for people to read
    details: dict[str, Any] = Field(default_factory=dict)
    kind: Literal["admin", "device"] = "admin"  # admin: an API key did it; device: the user's app/device did
    # Which key did it (null for device events, the local CLI and events from before keys were recorded).
    actorKeyId: str | None = None
    actorRole: Role | None = None
    # sha256 over the event's fields and the previous event's hash: `protect-console audit verify` checks the chain.
    hash: str | None = None


class EnrollmentCode(Wire):
    code: str
    expiresAt: datetime
    uri: str


# ------------------------------------------------------------ push attempts


class PushStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    BLOCKED = "blocked"


# One window for the bombing panel, the user screen's counts and hints.
BOMBING_WINDOW = timedelta(hours=1)
# Blocked + denied attempts in the window that make a user a suspect.
BOMBING_THRESHOLD = 5


class PushContext(Strict):
    app: str | None = Field(None, max_length=NAME_MAX)
    location: str | None = Field(None, max_length=NAME_MAX)
    ip: str | None = Field(None, max_length=64)

    @field_validator("app", "location", "ip")
    @classmethod
    def _check_text(cls, value: str | None) -> str | None:
        return _no_nul(value)


class PushAttempt(Wire):
    id: str
    userId: str
    username: str = ""
    resource: str
    status: PushStatus
    fraud: bool = False
    createdAt: datetime
    expiresAt: datetime
    respondedAt: datetime | None = None
    context: PushContext = Field(default_factory=PushContext)


class PushRequest(Strict):
    userId: str = Field(min_length=1, max_length=64)
    resource: str = Field(min_length=1, max_length=NAME_MAX)
    context: PushContext = Field(default_factory=PushContext)

    @field_validator("resource")
    @classmethod
    def _check_text(cls, value: str) -> str:
        return _no_nul(value)  # type: ignore[return-value]


class PushCreated(Wire):
    id: str
    status: PushStatus
    expiresAt: datetime


class PushBlockRequest(Strict):
    """Body of ``POST /api/v2/protect/users/{id}/push/block`` (Stop attack)."""

    minutes: int = Field(15, ge=1, le=1440, description="How long new pushes are refused.")
    cancelPending: bool = Field(True, description="Cancel the user's pending pushes now (they become expired).")
    requireUserVerification: bool = Field(
        False, description="From now on, approvals for this user must carry biometric/passcode verification."
    )


class PushBlockResult(Wire):
    blockedUntil: datetime
    cancelled: int  # pending pushes cancelled now


class PushBlockLifted(Wire):
    lifted: bool  # False: there was no block in force (nothing changed, nothing audited)


class PushStats(Wire):
    """One user's push attempts in the window [since, now]."""

    userId: str
    username: str = ""
    since: datetime
    total: int = 0
    approved: int = 0
    denied: int = 0
    blocked: int = 0
    expired: int = 0
    pending: int = 0
    fraud: int = 0
    resources: list[str] = []
    lastAttemptAt: datetime | None = None
    pushBlock: PushBlock | None = None

    @property
    def hostile(self) -> int:
        """Attempts that were refused: blocked by a limit or denied on the device."""
        return self.blocked + self.denied


class TotpVerifyRequest(Strict):
    userId: str = Field(min_length=1, max_length=64)
    code: str = Field(pattern=r"^[0-9]{6}$", description="The six digits the user reads out.")


class TotpVerifyResult(Wire):
    valid: bool
    reason: str | None = None


# --------------------------------------------------------------- device app


class DeviceEnrollRequest(Strict):
    code: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=NAME_MAX)
    device: DeviceInfo

    @field_validator("name")
    @classmethod
    def _check_text(cls, value: str) -> str:
        return _no_nul(value)  # type: ignore[return-value]


class DeviceEnrollResult(Wire):
    deviceId: str
    token: str


class DevicePush(Wire):
    id: str
    resource: str
    createdAt: datetime
    expiresAt: datetime
    context: PushContext = Field(default_factory=PushContext)


class PushResponse(Strict):
    decision: Literal["approve", "deny"]
    userVerified: bool = False
    reportFraud: bool = False


class DeviceSettingsUpdate(Strict):
    diagnosticsOptOut: bool | None = None
    notificationsEnabled: bool | None = None


class DeviceSettingsResult(Wire):
    diagnosticsOptOut: bool
    notificationsEnabled: bool


class DiagnosticsAccepted(Wire):
    stored: bool


class TotpEnrollResult(Wire):
    otpauthUri: str


# ------------------------------------------------------------ API keys (admin: /api/v2/protect/keys)

KEY_NAME_MAX = 200
KEY_RESOURCES_MAX = 100  # resources one service key may be scoped to


class ApiKeyStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class ApiKey(Wire):
    """What is shown about a key: never the key itself, never its hash."""

    id: str
    prefix: str = Field(description="The key's first characters (`pc_xxxxx`), to tell keys apart.")
    name: str
    role: Role
    status: ApiKeyStatus
    createdAt: datetime
    lastUsedAt: datetime | None = Field(None, description="Updated at most once a minute per key and process.")
    expiresAt: datetime | None = None
    revokedAt: datetime | None = None
    resources: list[str] | None = Field(None, description="Service keys: the resources it may push for (null: any).")


# A key's name and a resource: text with at least one visible character, no NUL (JSON Schema and Python alike).
_KEY_VISIBLE = "\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
KEY_TEXT_PATTERN = f"^[^\\x00]*[^{_KEY_VISIBLE}][^\\x00]*$"


def _key_text(value: str) -> str:
    import re  # noqa: PLC0415 - this section stays independent of the module's imports

    if re.fullmatch(KEY_TEXT_PATTERN, value) is None:
        raise ValueError("must have a visible character and no NUL")
    return _no_nul(value)  # type: ignore[return-value]


def _state_resource_items(schema: dict[str, Any]) -> None:
    """The JSON schema of ``resources``' items: the checks ``_key_text`` makes."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "array":
            branch["items"] = {"type": "string", "minLength": 1, "maxLength": NAME_MAX, "pattern": KEY_TEXT_PATTERN}


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=KEY_NAME_MAX, json_schema_extra={"pattern": KEY_TEXT_PATTERN})
    role: Role
    expiresAt: datetime | None = Field(None, description="When the key stops working (null: never); in the future.")
    resources: list[str] | None = Field(
        None, min_length=1, max_length=KEY_RESOURCES_MAX,
        description="Service keys only: pushes for any other resource are refused 403 (null: any resource).",
        json_schema_extra=_state_resource_items,
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _key_text(value)

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, value: list[str] | None) -> list[str] | None:
        for resource in value or ():
            if len(resource) > NAME_MAX:
                raise ValueError(f"each resource must be at most {NAME_MAX} characters")
            _key_text(resource)
        return value


class ApiKeyRotate(Strict):
    graceSeconds: int = Field(
        0, ge=0, le=30 * 86400,
        description="How long the old key keeps working (it then expires); 0: revoked at once.",
    )


class ApiKeyIssued(Wire):
    """A key just created or rotated: ``key`` is shown here once and never again."""

    key: str
    apiKey: ApiKey
    replaced: ApiKey | None = Field(None, description="Rotation: the old key, revoked or expiring after the grace.")
