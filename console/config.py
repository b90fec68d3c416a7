"""Connection profiles: TOML under the XDG config dir, overridden by the environment.

``$XDG_CONFIG_HOME/protect-console/config.toml``::

    default_profile = "prod"

    [profiles.prod]
    url = "https://protect.example.com"
    api_key_env = "PROD_PROTECT_KEY"     # or api_key = "..." or api_key_command = "pass show protect"
    readonly = true
    theme = "textual-dark"
    timeout = 10                         # seconds before a request with its retries gives up

Precedence, lowest to highest: the profile in the file, then the environment
(``PROTECT_CONSOLE_URL``, ``PROTECT_CONSOLE_API_KEY``, ``PROTECT_CONSOLE_TIMEOUT``), then flags (``--url``,
``--readonly``). API keys are never taken from flags: argv is visible to every
local user in ``ps``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

APP_NAME = "protect-console"
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_PROFILE = "default"
DEFAULT_THEME = "textual-dark"
ENV_URL = "PROTECT_CONSOLE_URL"
ENV_API_KEY = "PROTECT_CONSOLE_API_KEY"
ENV_PROFILE = "PROTECT_CONSOLE_PROFILE"
ENV_TIMEOUT = "PROTECT_CONSOLE_TIMEOUT"
MIN_TIMEOUT, MAX_TIMEOUT = 0.1, 600.0  # seconds a request may take in all, retries included
KEY_COMMAND_TIMEOUT = 30.0  # long enough to type a gpg passphrase into pinentry


class ConfigError(Exception):
    """The configuration cannot give a usable profile; the message says what to fix."""


@dataclass(frozen=True)
class ConnectionProfile:
    """Everything needed to talk to one backend, already resolved."""

    name: str
    url: str
    api_key: str = field(repr=False)  # resolved from api_key/api_key_env/api_key_command; never printed
    readonly: bool = False
    theme: str = "textual-dark"
    timeout: float | None = None  # seconds for a request, retries included; None: the client's default
    key_source: str = field(
        default="", compare=False
    )  # where the key came from ("$PROD_PROTECT_KEY", "api_key_command"), to say what to fix


# ------------------------------------------------------------------ the file


_URL_EXAMPLE = "like http://127.0.0.1:8080"
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")  # "_" too: container names have it


def _check_host(host: str) -> None:
    """Raise ValueError unless ``host`` is an IP address or a name DNS can look up (IDN included)."""
    if not host:
        raise ValueError(f"has no host name, {_URL_EXAMPLE}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("has an IPv6 address without its closing ], like http://[::1]:8080")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError("has an invalid IPv6 address between [ and ]") from None
        return
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError("has an invalid IPv4 address (four numbers 0-255 separated by dots)") from None
        return
    name = host.removesuffix(".")
    if len(name) > 253:
        raise ValueError("has a host name longer than 253 characters")
    for label in name.split("."):
        if label.isascii() and _DNS_LABEL.match(label) and not label.lower().startswith("xn--"):
            continue
        import idna  # httpx's own IDNA codec, so what passes here is what it sends

        try:
            (idna.decode if label.isascii() else idna.encode)(label)
        except (idna.IDNAError, UnicodeError):
            raise ValueError(
                "has an invalid host name (letters, digits and hyphens between dots; a hyphen neither first nor last)"
            ) from None


def _check_port(port: str) -> None:
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("has an invalid port after the host (a number from 1 to 65535)")


def _split_authority(authority: str) -> tuple[str, str | None]:
    """``host[:port]`` as (host, port or None); an IPv6 host keeps its brackets."""
    if authority.startswith("["):
        inside, closed, after = authority.partition("]")
        if closed and after and not after.startswith(":"):
            raise ValueError("has something other than :PORT after the IPv6 address, like http://[::1]:8080")
        return inside + closed, (after[1:] if after else None)
    if ":" not in authority:
        return authority, None
    host, _colon, port = authority.rpartition(":")
    if ":" in host:
        raise ValueError("has more than one ':' after the host (an IPv6 address goes in [ ])")
    return host, port


def _check_url(value: str) -> str:
    """The URL, normalised; ValueError says what is wrong (never repeating a password in it)."""
    value = value.strip()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain spaces or control characters")
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL, {_URL_EXAMPLE}")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        # The API key is the credential; a password in the URL would be shown wherever the URL is.
        raise ValueError(
            f"must not contain a user name or password (user:password@): the API key authenticates, "
            f"give the URL alone, {_URL_EXAMPLE}"
        )
    if "?" in rest or "#" in rest:
        raise ValueError(f"must not have a query (?...) or fragment (#...), {_URL_EXAMPLE}")
    host, port = _split_authority(authority)
    _check_host(host)
    if port is not None:
        _check_port(port)
    return f"{scheme.lower()}://{rest}".rstrip("/")


# What an API key may contain: the service issues URL-safe ASCII; a space, a line break or a
# typographic quote in one is a copy-and-paste accident, better named here than sent as a header.
def _check_key(key: str, where: str) -> str:
    """``key`` if it can be an API key, else ConfigError naming ``where`` it came from (never the key)."""
    for position, char in enumerate(key, start=1):
        if char in "\r\n":
            problem = "contains a line break (CR/LF): set the key alone, on one line"
        elif not char.isascii():
            problem = (
                f"contains a non-ASCII character (at position {position}): API keys are plain ASCII; "
                f"was it pasted with a typographic quote or a non-breaking space?"
            )
        elif char.isspace() or not char.isprintable():
            problem = f"contains a space or control character (at position {position})"
        else:
            continue
        raise ConfigError(f"{where}: the API key {problem}")
    return key


def _check_timeout(value: float) -> float:
    if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise ValueError(f"must be a number of seconds from {MIN_TIMEOUT:g} to {MAX_TIMEOUT:g}, got {value:g}")
    return value


class ProfileSettings(BaseModel):
    """One ``[profiles.NAME]`` table: a backend and how to authenticate to it."""

    # defer_build: the validator is built when a config file is read, not at every start (most starts have none).
    model_config = ConfigDict(extra="forbid", defer_build=True)

    url: str | None = Field(
        default=None,
        description="Base URL of the Protect API, e.g. ``https://protect.example.com``. Default ``http://127.0.0.1:8080``.",
    )

    api_key: SecretStr | None = Field(
        default=None,
        description="The API key itself. Prefer ``api_key_env`` or ``api_key_command``; if you use this, keep the file mode 600.",
    )

    api_key_env: str | None = Field(
        default=None,
        min_length=1,
        description="Name of an environment variable holding the API key.",
    )

    api_key_command: str | None = Field(
        default=None,
        min_length=1,
        description="A command printing the API key on stdout, e.g. ``pass show protect``. Run without a shell.",
    )

    readonly: bool = Field(
        default=False,
        description="Hide and refuse every changing action, whatever the key's role allows.",
    )

    theme: str = Field(
        default=DEFAULT_THEME,
        min_length=1,
        description="Textual theme name for the console.",
    )

    timeout: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Seconds a request may take, retries included, before the console says there is no answer. Default 10.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float | None) -> float | None:
        return None if value is None else _check_timeout(value)

    @model_validator(mode="after")
    def _one_key_source(self) -> ProfileSettings:
        given = [n for n in ("api_key", "api_key_env", "api_key_command") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of api_key, api_key_env, api_key_command (found {', '.join(given)})")
        return self


class ConsoleSettings(BaseModel):
    """The whole ``config.toml``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    default_profile: str | None = Field(
        default=None,
        min_length=1,
        description="Profile used when ``--profile`` is not given.",
    )

    profiles: dict[str, ProfileSettings] = Field(
        default_factory=dict,
        description="Named connection profiles, one ``[profiles.NAME]`` table each.",
    )


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/protect-console/config.toml`` (or the platform's equivalent)."""
    import platformdirs  # small, but only needed here

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def _describe_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        else:
            message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def read_config(path: Path) -> ConsoleSettings:
    """Parse and validate ``path``; a missing file is an empty configuration."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ConsoleSettings()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return ConsoleSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe_errors(exc)}") from exc


def _check_permissions(path: Path, settings: ConsoleSettings, warn: Callable[[str], None]) -> None:
    # Like ssh with a private key: a key in a file others can read is a leaked key.
    if not any(p.api_key is not None for p in settings.profiles.values()):
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(
            f"{path} holds an api_key and is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {shlex.quote(str(path))}"
        )


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ------------------------------------------------------------------ API keys


def run_key_command(command: str, *, profile: str, timeout: float = KEY_COMMAND_TIMEOUT) -> str:
    """Run ``api_key_command`` (no shell) and return its stdout, stripped."""
    where = f"profile {profile!r}: api_key_command"
    try:
        args = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"{where} cannot be parsed: {exc}") from exc
    if not args:
        raise ConfigError(f"{where} is empty")
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: command not found: {args[0]}") from exc
    except PermissionError as exc:
        raise ConfigError(f"{where}: not executable: {args[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(f"{where} did not finish within {timeout:g} s") from exc
    except OSError as exc:
        raise ConfigError(f"{where} could not run: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        from .safe_text import printable

        last = (done.stderr or "").strip().splitlines()
        detail = f": {printable(last[-1], max_length=200)}" if last else ""
        raise ConfigError(f"{where} exited with status {done.returncode}{detail}")
    key = (done.stdout or "").strip()
    if not key:
        raise ConfigError(f"{where} printed nothing on stdout")
    # `pass` prints the secret on the first line and metadata below it.
    key = key.splitlines()[0].strip()
    return key


def _missing_key(profile: str, path: Path) -> ConfigError:
    return ConfigError(
        f"no API key for profile {profile!r}: set {ENV_API_KEY}, or add api_key_env, api_key_command "
        f"or api_key to [profiles.{profile}] in {path} (keys are never accepted on the command line)"
    )


def _key_source(settings: ProfileSettings | None) -> str:
    """Where :func:`_resolve_key` takes the key from, in words a person can act on (never the key)."""
    if os.environ.get(ENV_API_KEY, "").strip():
        return f"${ENV_API_KEY}"
    if settings is None:
        return ""
    if settings.api_key is not None:
        return "api_key in config.toml"
    if settings.api_key_env is not None:
        return f"${settings.api_key_env}"
    if settings.api_key_command is not None:
        return "api_key_command"
    return ""


def _resolve_key(name: str, settings: ProfileSettings | None, path: Path) -> str:
    env_key = os.environ.get(ENV_API_KEY, "").strip()
    if env_key:
        return _check_key(env_key, f"${ENV_API_KEY}")
    if settings is None:
        raise _missing_key(name, path)
    if settings.api_key is not None:
        key = settings.api_key.get_secret_value().strip()
        if not key:
            raise ConfigError(f"profile {name!r}: api_key is empty in {path}")
        return _check_key(key, f"profile {name!r}: api_key in {path}")
    if settings.api_key_env is not None:
        key = os.environ.get(settings.api_key_env, "").strip()
        if not key:
            raise ConfigError(f"profile {name!r}: api_key_env names {settings.api_key_env}, which is not set or empty")
        return _check_key(key, f"profile {name!r}: ${settings.api_key_env} (its api_key_env)")
    if settings.api_key_command is not None:
        key = run_key_command(settings.api_key_command, profile=name)
        return _check_key(key, f"profile {name!r}: the output of api_key_command")
    raise _missing_key(name, path)


def _resolve_timeout(profile: ProfileSettings | None) -> float | None:
    raw = os.environ.get(ENV_TIMEOUT, "").strip()
    if not raw:
        return profile.timeout if profile else None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{ENV_TIMEOUT}: must be a number of seconds, got {raw!r}")
    try:
        return _check_timeout(value)
    except ValueError as exc:
        raise ConfigError(f"{ENV_TIMEOUT}: {exc}") from exc


# ------------------------------------------------------------------ resolve


def load_profile(
    name: str | None,
    *,
    url: str | None,
    readonly: bool | None,
    config_path: Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> ConnectionProfile:
    """Resolve a :class:`ConnectionProfile` from the file, the environment and flags.

    ``name`` None picks ``$PROTECT_CONSOLE_PROFILE``, then ``default_profile``,
    then the only profile in the file, then an unnamed default (localhost).
    ``readonly`` None keeps the profile's setting; True/False overrides it.
    """
    path = config_path or default_config_path()
    settings = read_config(path)
    _check_permissions(path, settings, warn or _stderr_warning)

    explicit = name or os.environ.get(ENV_PROFILE) or None
    if explicit is not None:
        if explicit not in settings.profiles:
            known = ", ".join(sorted(settings.profiles)) or "none"
            raise ConfigError(f"unknown profile {explicit!r} (profiles in {path}: {known})")
        chosen = explicit
    elif settings.default_profile is not None:
        if settings.default_profile not in settings.profiles:
            raise ConfigError(
                f"{path}: default_profile {settings.default_profile!r} has no [profiles.{settings.default_profile}] table"
            )
        chosen = settings.default_profile
    elif len(settings.profiles) == 1:
        chosen = next(iter(settings.profiles))
    else:
        chosen = DEFAULT_PROFILE
    profile = settings.profiles.get(chosen)

    if url is not None:
        source, raw_url = "--url", url
    elif os.environ.get(ENV_URL, "").strip():
        source, raw_url = ENV_URL, os.environ[ENV_URL]
    else:
        source, raw_url = f"profiles.{chosen}.url", (profile.url if profile and profile.url else DEFAULT_URL)
    try:
        resolved_url = _check_url(raw_url)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc

    return ConnectionProfile(
        name=chosen,
        url=resolved_url,
        api_key=_resolve_key(chosen, profile, path),
        readonly=(profile.readonly if profile else False) if readonly is None else readonly,
        theme=profile.theme if profile else DEFAULT_THEME,
        timeout=_resolve_timeout(profile),
        key_source=_key_source(profile),
    )
