"""Wire models: the contract between the service and its clients.

The server validates requests and shapes responses with these; the client
parses responses into them. Field names follow JumpCloud's public API where a
JumpCloud shape exists (``_id``, ``totalCount``, ``mfaEnrollment``...), so they
are camelCase on purpose. No server or UI imports here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

T = TypeVar("T")

NAME_MAX = 1024  # users edit their names in the portal: any Unicode up to this length


def _unicode(value: str) -> str:
    # A lone surrogate ("\ud800" is legal JSON) is not text: neither store can encode it.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must not contain lone surrogates (not valid Unicode)") from None
    return value


def _no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; refuse it everywhere so both stores agree.
    if value is not None:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        _unicode(value)
    return value


def _plain_json(value: Any, where: str = "") -> Any:
    """A free-form JSON value (a filter) whose every string and key is Unicode text. A NUL is the service's
    to refuse (a filter value is matched, never stored), with a 400 naming the filter field."""
    if isinstance(value, str):
        try:
            _unicode(value)
        except ValueError as exc:
            raise ValueError(f"{where + ': ' if where else ''}{exc}") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            _plain_json(key, where)
            _plain_json(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain_json(item, f"{where}[{i}]")
    return value


class _Pattern:
    """States in the JSON schema a pattern that a validator enforces (with a message people can read)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema: dict[str, Any] = handler(core_schema)
        schema["pattern"] = self.pattern
        return schema


def _matching(pattern: str, message: str) -> Any:
    def check(value: str) -> str:
        if re.fullmatch(pattern, value) is None:
            raise ValueError(message)
        return value

    return AfterValidator(check)


# Patterns spell whitespace and control characters out, so that JSON Schema's (ECMA-262), Python's and
# pydantic's regular expressions read them alike (their \s differ).
_SPACE_OR_CONTROL = "\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
TEXT_PATTERN = "^[^\\x00]*$"  # and no lone surrogate, which a JSON Schema pattern cannot say
USERNAME_PATTERN = f"^[^{_SPACE_OR_CONTROL}]+$"
EMAIL_PATTERN = f"^[^@{_SPACE_OR_CONTROL}]+@[^{_SPACE_OR_CONTROL}]*\\.[^{_SPACE_OR_CONTROL}]*$"

# Request text: any Unicode but NUL and lone surrogates.
Text = Annotated[str, AfterValidator(_no_nul), _Pattern(TEXT_PATTERN)]
Username = Annotated[
    str,
    AfterValidator(_no_nul),
    _matching(USERNAME_PATTERN, "must be non-empty with no spaces or control characters"),
    _Pattern(USERNAME_PATTERN),
]
Email = Annotated[
    str,
    AfterValidator(_no_nul),
    _matching(EMAIL_PATTERN, "must be an email address like name@example.com"),
    _Pattern(EMAIL_PATTERN),
]
# A free-form JSON object (a filter, a diagnostics report): keys and strings are text.
JsonObject = Annotated[dict[str, Any], AfterValidator(_plain_json)]

_ISO_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _iso_date_time(value: Any) -> Any:
    # pydantic's lax mode reads a number (or "0.5") as a Unix time; the schema says an ISO 8601 date-time.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE_TIME.match(value):
        raise ValueError("must be an ISO 8601 date-time like 2026-01-01T09:30:00Z")
    return value


# A date-time in a request: ISO 8601 text only.
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_date_time)]


class Wire(BaseModel):
    """Base for response models: tolerant of fields added by newer servers."""

    # defer_build: a model's validator is built when it is first used, not at import: the console's
    # start-up parses a page of users and nothing else.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", defer_build=True)


class Strict(BaseModel):
    """Base for request bodies: unknown fields are an error naming the field."""

    # Deferred too (~30 ms of the console's start: it sends these bodies and validates none of them at
    # start-up); the service builds them all before its routes exist: build_request_models().
    model_config = ConfigDict(populate_by_name=True, extra="forbid", defer_build=True)


def build_request_models() -> None:
    """Build every request body's validator now, and have FastAPI's adapters for them built eagerly.

    For the service, before its routes are declared. FastAPI silences pydantic's warning about the
    alias it gives a body only while it builds an adapter; one deferred to the first request warns.
    """
    pending: list[type[BaseModel]] = [Strict]
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        model.model_config["defer_build"] = False
        model.model_rebuild(force=True)


PAGE_MAX = 100  # the API's largest page: the service's limit, the CLI's page size


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
        None,
        exclude_if=lambda v: v is None,
        description="Cursor of the first row of `results` (pass it as `before`); absent when there are no rows.",
    )
    endCursor: str | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="Cursor of the last row of `results` (pass it as `after`); absent when there are no rows.",
    )


class ErrorBody(Wire):
    message: str
    retryAfter: int | None = None
    blockedUntil: datetime | None = None  # 429 while a Stop-attack block is in force


class FieldError(Wire):
    field: str  # "username", "context.ip", "since (query)", "request body"
    message: str


class ValidationErrorBody(ErrorBody):
    """422: the request does not validate; ``message`` sums up ``errors``, one per field."""

    errors: list[FieldError] = Field(default_factory=list)


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

    failures: int = 0  # wrong codes in the current failure window (a good code does not clear them)
    maxFailures: int = 5  # the setting in force
    locked: bool = False  # a lock-out is in force: every code is refused until lockedUntil or a TOTP reset
    lockedUntil: datetime | None = None  # when the lock-out in force ends
    lockouts: int = 0  # lock-outs in a row (each one longer); forgotten a day after the last one ended


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


class SystemUserCreate(Strict):
    username: Username = Field(min_length=1, max_length=NAME_MAX)
    email: Email = Field(min_length=3, max_length=254)
    firstname: Text = Field("", max_length=NAME_MAX)
    lastname: Text = Field("", max_length=NAME_MAX)
    displayname: Text = Field("", max_length=NAME_MAX)


class SystemUserUpdate(Strict):
    username: Username | None = Field(None, min_length=1, max_length=NAME_MAX)
    email: Email | None = Field(None, min_length=3, max_length=254)
    firstname: Text | None = Field(None, max_length=NAME_MAX)
    lastname: Text | None = Field(None, max_length=NAME_MAX)
    displayname: Text | None = Field(None, max_length=NAME_MAX)
    state: UserState | None = None
    account_locked: StrictBool | None = None
    requireUserVerification: StrictBool | None = None  # Protect: per-user biometric requirement for approvals


SearchField = Literal["username", "email", "firstname", "lastname", "displayname"]


def _default_search_fields() -> list[SearchField]:
    return ["username", "email", "firstname", "lastname"]


class SearchFilter(Strict):
    searchTerm: str = Field("", max_length=NAME_MAX)  # a NUL: the service's 400 naming `search`
    fields: list[SearchField] = Field(default_factory=_default_search_fields, max_length=5)


class UserSearch(Strict):
    """Body of ``POST /api/search/systemusers``.

    ``filter`` is a mapping of field -> value (equality) or field -> {"$op": value},
    over the same fields as the list endpoint's ``filter`` parameter.
    """

    searchFilter: SearchFilter = Field(default_factory=SearchFilter)
    filter: JsonObject | None = None


GRACE_DAYS_MAX = 365  # the longest grace period an MFA reset may give


class ResetMfaRequest(Strict):
    # The schema says what _one_of checks: not both (a null one is as good as absent).
    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": ["exclusionDays", "exclusionUntil"],
                "properties": {"exclusionDays": {"type": "integer"}, "exclusionUntil": {"type": "string"}},
            }
        }
    )

    exclusion: StrictBool = False
    exclusionDays: int | None = Field(None, ge=1, le=GRACE_DAYS_MAX)
    exclusionUntil: IsoDateTime | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ResetMfaRequest:
        if self.exclusionDays is not None and self.exclusionUntil is not None:
            raise ValueError("give exclusionDays or exclusionUntil, not both")
        return self


class TotpResetResult(Wire):
    userId: str
    totpStatus: EnrollmentStatus
    changed: bool = True  # False: the user had no TOTP (nothing changed, no audit event)


# ------------------------------------------------------------- push devices


class DeviceInfo(Strict):
    make: Text = Field(min_length=1, max_length=128)
    model: Text = Field(min_length=1, max_length=NAME_MAX)
    os: Literal["iOS", "Android"]
    osVersion: Text = Field(min_length=1, max_length=32)
    appVersion: Text = Field(min_length=1, max_length=32)
    uvEnabled: StrictBool = False


MIN_OS_MAJOR = {"iOS": 13, "Android": 8}  # from the Protect FAQ; enrolment refuses older systems


def _at_least(minimum: int) -> str:
    """A regular expression for the whole numbers >= ``minimum`` (< 100), leading zeros allowed."""
    tens, units = divmod(minimum, 10)
    if not tens:
        return f"0*(?:[{units}-9]|[1-9][0-9]+)"
    higher = f"|[{tens + 1}-9][0-9]" if tens < 9 else ""
    return f"0*(?:{tens}[{units}-9]{higher}|[1-9][0-9]{{2,}})"


def os_version_pattern(os: str) -> str:
    """The versions of ``os`` enrolment accepts: the major (up to the first dot) at least MIN_OS_MAJOR."""
    return f"^{_at_least(MIN_OS_MAJOR[os])}(?:\\.[\\s\\S]*)?$"


class EnrollingDevice(DeviceInfo):
    """The device in an enrolment: as DeviceInfo, and a supported system (services/devices.py checks it)."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"os": {"const": os}}},
                    "then": {"properties": {"osVersion": {"pattern": os_version_pattern(os)}}},
                }
                for os in MIN_OS_MAJOR
            ]
        }
    )


class DevicePrivacy(Wire):
    diagnosticsOptOut: bool = False
    updatedAt: datetime | None = None


DeviceState = Literal["active", "inactive"]  # inactive: the device stops approving pushes until activated


class PushEndpoint(Wire):
    id: str
    name: str
    state: DeviceState
    enrollmentDate: datetime
    lastUsedDate: datetime | None = None
    device: DeviceInfo
    privacy: DevicePrivacy = Field(default_factory=DevicePrivacy)


class PushEndpointPatch(Strict):
    name: Text | None = Field(None, min_length=1, max_length=NAME_MAX)
    state: DeviceState | None = None


class PrivacyDevice(PushEndpoint):
    user: UserRef


class PrivacySummary(Wire):
    devices: int
    optedOut: int
    optedIn: int
    diagnosticsStored: int = 0
    diagnosticsDropped: int = 0


# ----------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """One Protect setting, declared once in :data:`SETTINGS`.

    The settings models below take their defaults, ranges and descriptions from it (so the service
    validates with it), and the CLI's ``settings set``, the console's Settings editor and the
    README's table read it: changing a range here changes it everywhere.
    """

    key: str  # the dotted path in the settings document, and the setting's name in the CLI
    label: str  # the console's name for it
    default: int | bool
    meaning: str  # what it does, in the Protect FAQ's words where the FAQ has them
    low: int | None = None  # the allowed range; none for an on/off setting
    high: int | None = None
    unit: str = ""
    aliases: tuple[str, ...] = ()  # the CLI's first names for it, still accepted

    @property
    def is_bool(self) -> bool:
        return isinstance(self.default, bool)

    @property
    def range(self) -> tuple[int, int] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    def read(self, document: Any) -> Any:
        """This setting's value in ``document`` (the settings model, or its JSON as a dict)."""
        node = document
        for part in self.key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        return node

    def patch(self, value: int | bool) -> dict[str, Any]:
        """The smallest PATCH body that sets only this value."""
        body: Any = value
        for part in reversed(self.key.split(".")):
            body = {part: body}
        return dict(body)

    def check(self, text: str, name: str = "") -> tuple[int | bool | None, str]:
        """``(value, "")`` for text the service accepts, else ``(None, a message naming the setting)``."""
        name = name or self.key
        typed = text.strip()
        if self.is_bool:
            if typed.lower() in ("true", "on", "yes", "1"):
                return True, ""
            if typed.lower() in ("false", "off", "no", "0"):
                return False, ""
            return None, f"{name}: expected true or false (or on/off), got {text!r}"
        try:
            value = int(typed)
        except ValueError:
            return None, f"{name}: expected a whole number, got {text!r}"
        allowed = self.range
        if allowed is not None and not allowed[0] <= value <= allowed[1]:
            return None, f"{name}: must be between {self.low} and {self.high}, got {value}"
        return value, ""

    def show(self, value: Any, *, unit: bool = True) -> str:
        """``on``/``off``, or the number with its unit (``60 seconds``)."""
        if self.is_bool:
            return "on" if value else "off"
        return f"{value} {self.unit}".strip() if unit else str(value)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "push.concurrentLimit.enabled",
        "Limit concurrent push attempts",
        True,
        "On: Protect blocks extra push notifications for the same resource while earlier ones are "
        "still pending, which protects users against push bombing. Off: no limit.",
        aliases=("push.limit-enabled",),
    ),
    Setting(
        "push.concurrentLimit.max",
        "Max concurrent push attempts",
        1,
        "Against fraudulent push attempts, Protect blocks more than this many notifications per "
        "user and resource within the timeout period. The user can try again after the timeout, "
        "or after approving or denying the first request.",
        low=1,
        high=10,
        unit="per resource",
        aliases=("push.max-concurrent",),
    ),
    Setting(
        "push.maxPendingPerUser",
        "Max pending pushes per user",
        5,
        "However the resource is named, Protect blocks more than this many pending notifications per user "
        "across all resources: varying the resource does not get past the limit above.",
        low=1,
        high=50,
        unit="per user",
    ),
    Setting(
        "push.timeoutSeconds",
        "Push timeout",
        60,
        "How long a user has to answer a push notification (sixty seconds by default); after that "
        "it expires. If a phone's clock is not set automatically, notifications may arrive expired.",
        low=30,
        high=300,
        unit="seconds",
        aliases=("push.timeout",),
    ),
    Setting(
        "push.requireUserVerification",
        "Require biometric",
        False,
        "Approvals must be confirmed with biometrics (Touch ID, Face ID) or the device passcode. "
        "Recommended against push bombing: an accidental tap is not enough to approve.",
        aliases=("push.require-biometric",),
    ),
    Setting(
        "totp.maxFailures",
        "TOTP max failures",
        5,
        "Wrong verification (TOTP) codes within 15 minutes before the user's TOTP is locked: for 1 minute, "
        "then 5, 15 and 60 minutes on repeated lock-outs. A good code does not clear the count; a TOTP reset "
        "by an admin unlocks at once.",
        low=1,
        high=20,
        unit="codes",
        aliases=("totp.max-failures",),
    ),
    Setting(
        "rateLimits.totpVerifyPerMinute",
        "TOTP checks rate limit",
        3000,
        "TOTP checks each API key, and each client address, may make per minute (all service processes "
        "together); more are refused with 429 until the minute ends.",
        low=10,
        high=1_000_000,
        unit="per minute",
    ),
    Setting(
        "rateLimits.pushPerMinute",
        "Push requests rate limit",
        1200,
        "Push requests each API key, and each client address, may make per minute; more are refused with 429.",
        low=10,
        high=1_000_000,
        unit="per minute",
    ),
    Setting(
        "rateLimits.enrollPerMinute",
        "Device enrolment rate limit",
        60,
        "Device enrolments each client address may attempt per minute (against guessing enrolment codes); "
        "more are refused with 429.",
        low=1,
        high=10_000,
        unit="per minute",
    ),
)
SETTING: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}
# Allowed ranges by key, for the tools that only need those (benchmarks lifting the rate limits).


def _value(key: str) -> Any:
    """The field of setting ``key`` in :class:`ProtectSettings`: default, range and meaning from SETTINGS."""
    setting = SETTING[key]
    return Field(setting.default, ge=setting.low, le=setting.high, description=setting.meaning)


def _change(key: str) -> Any:
    """The field of setting ``key`` in :class:`ProtectSettingsPatch`: absent or in range."""
    setting = SETTING[key]
    return Field(None, ge=setting.low, le=setting.high, description=setting.meaning)


class ConcurrentLimit(Strict):
    enabled: StrictBool = _value("push.concurrentLimit.enabled")
    max: int = _value("push.concurrentLimit.max")


class PushSettings(Strict):
    concurrentLimit: ConcurrentLimit = Field(default_factory=ConcurrentLimit)
    maxPendingPerUser: int = _value("push.maxPendingPerUser")
    timeoutSeconds: int = _value("push.timeoutSeconds")
    requireUserVerification: StrictBool = _value("push.requireUserVerification")


class TotpSettings(Strict):
    maxFailures: int = _value("totp.maxFailures")


class RateLimitSettings(Strict):
    """Requests per minute allowed to each API key and, separately, to each client address (all processes)."""

    totpVerifyPerMinute: int = _value("rateLimits.totpVerifyPerMinute")
    pushPerMinute: int = _value("rateLimits.pushPerMinute")
    enrollPerMinute: int = _value("rateLimits.enrollPerMinute")


class ProtectSettings(Strict):
    push: PushSettings = Field(default_factory=PushSettings)
    totp: TotpSettings = Field(default_factory=TotpSettings)
    rateLimits: RateLimitSettings = Field(default_factory=RateLimitSettings)


class ConcurrentLimitPatch(Strict):
    enabled: StrictBool | None = _change("push.concurrentLimit.enabled")
    max: int | None = _change("push.concurrentLimit.max")


class PushSettingsPatch(Strict):
    concurrentLimit: ConcurrentLimitPatch | None = None
    maxPendingPerUser: int | None = _change("push.maxPendingPerUser")
    timeoutSeconds: int | None = _change("push.timeoutSeconds")
    requireUserVerification: StrictBool | None = _change("push.requireUserVerification")


class TotpSettingsPatch(Strict):
    maxFailures: int | None = _change("totp.maxFailures")


class RateLimitSettingsPatch(Strict):
    totpVerifyPerMinute: int | None = _change("rateLimits.totpVerifyPerMinute")
    pushPerMinute: int | None = _change("rateLimits.pushPerMinute")
    enrollPerMinute: int | None = _change("rateLimits.enrollPerMinute")


class ProtectSettingsPatch(Strict):
    push: PushSettingsPatch | None = None
    totp: TotpSettingsPatch | None = None
    rateLimits: RateLimitSettingsPatch | None = None


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
    app: Text | None = Field(None, max_length=NAME_MAX)
    location: Text | None = Field(None, max_length=NAME_MAX)
    ip: Text | None = Field(None, max_length=64)


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
    resource: Text = Field(min_length=1, max_length=NAME_MAX)
    context: PushContext = Field(default_factory=PushContext)


class PushCreated(Wire):
    id: str
    status: PushStatus
    expiresAt: datetime


BLOCK_MINUTES = (1, 1440)  # how long a Stop-attack block may last
BLOCK_MINUTES_DEFAULT = 15


class PushBlockRequest(Strict):
    """Body of ``POST /api/v2/protect/users/{id}/push/block`` (Stop attack)."""

    minutes: int = Field(
        BLOCK_MINUTES_DEFAULT, ge=BLOCK_MINUTES[0], le=BLOCK_MINUTES[1], description="How long new pushes are refused."
    )
    cancelPending: StrictBool = Field(True, description="Cancel the user's pending pushes now (they become expired).")
    requireUserVerification: StrictBool = Field(
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


TOTP_CODE_PATTERN = r"^[0-9]{6}$"  # what a user reads out of the authenticator app


class TotpVerifyRequest(Strict):
    userId: str = Field(min_length=1, max_length=64)
    code: str = Field(pattern=TOTP_CODE_PATTERN, description="The six digits the user reads out.")


class TotpVerifyResult(Wire):
    valid: bool
    reason: str | None = None


# --------------------------------------------------------------- device app


class DeviceEnrollRequest(Strict):
    code: Text = Field(min_length=1, max_length=64)
    name: Text = Field(min_length=1, max_length=NAME_MAX)
    device: EnrollingDevice


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
    userVerified: StrictBool = False
    reportFraud: StrictBool = False


class DeviceSettingsUpdate(Strict):
    diagnosticsOptOut: StrictBool | None = None
    notificationsEnabled: StrictBool | None = None


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
KEY_TEXT_PATTERN = f"^[^\\x00]*[^{_SPACE_OR_CONTROL}][^\\x00]*$"


def _key_text(value: str) -> str:
    if re.fullmatch(KEY_TEXT_PATTERN, value) is None:  # the pattern refuses a NUL too
        raise ValueError("must have a visible character and no NUL")
    return _unicode(value)


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
        None,
        min_length=1,
        max_length=KEY_RESOURCES_MAX,
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
        0,
        ge=0,
        le=30 * 86400,
        description="How long the old key keeps working (it then expires); 0: revoked at once.",
    )


class ApiKeyIssued(Wire):
    """A key just created or rotated: ``key`` is shown here once and never again."""

    key: str
    apiKey: ApiKey
    replaced: ApiKey | None = Field(None, description="Rotation: the old key, revoked or expiring after the grace.")
