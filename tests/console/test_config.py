"""Profile resolution: file < environment < flags; keys from env, file, variable or command."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from console.config import (
    DEFAULT_URL,
    ConfigError,
    ConnectionProfile,
    default_config_path,
    load_profile,
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's real config and environment never leak into these tests."""
    config_home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    for name in ("PROTECT_CONSOLE_URL", "PROTECT_CONSOLE_API_KEY", "PROTECT_CONSOLE_PROFILE", "PROD_PROTECT_KEY"):
        monkeypatch.delenv(name, raising=False)
    return config_home


def write_config(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def python_command(code: str) -> str:
    """A command line running ``code`` with this interpreter, quoted for shlex."""
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


PROD = """
default_profile = "prod"

[profiles.prod]
url = "https://protect.example.com/"
api_key_env = "PROD_PROTECT_KEY"
readonly = true
theme = "nord"

[profiles.staging]
url = "https://staging.example.com"
api_key = "staging-key"
"""


def test_default_path_follows_xdg_config_home(isolated_env: Path) -> None:
    assert default_config_path() == isolated_env / "protect-console" / "config.toml"


def test_no_file_uses_localhost_and_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", "env-key")
    profile = load_profile(None, url=None, readonly=None)
    assert profile == ConnectionProfile(name="default", url=DEFAULT_URL, api_key="env-key", readonly=False)


def test_file_profile_from_default_config_path(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(isolated_env / "protect-console" / "config.toml", PROD)
    monkeypatch.setenv("PROD_PROTECT_KEY", "prod-key")
    profile = load_profile(None, url=None, readonly=None)
    assert profile.name == "prod"
    assert profile.url == "https://protect.example.com"  # trailing slash dropped
    assert profile.api_key == "prod-key"
    assert profile.readonly is True
    assert profile.theme == "nord"


def test_env_overrides_file_and_url_flag_overrides_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path / "c.toml", PROD)
    monkeypatch.setenv("PROD_PROTECT_KEY", "prod-key")
    monkeypatch.setenv("PROTECT_CONSOLE_URL", "http://env.example:9000")
    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", "env-key")

    from_env = load_profile("prod", url=None, readonly=None, config_path=path)
    assert (from_env.url, from_env.api_key) == ("http://env.example:9000", "env-key")

    from_flag = load_profile("prod", url="http://flag.example:1234", readonly=False, config_path=path)
    assert from_flag.url == "http://flag.example:1234"
    assert from_flag.readonly is False  # an explicit flag beats the profile


def test_named_profile_with_inline_key(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", PROD)
    profile = load_profile("staging", url=None, readonly=True, config_path=path)
    assert (profile.name, profile.url, profile.api_key, profile.readonly) == (
        "staging",
        "https://staging.example.com",
        "staging-key",
        True,
    )


def test_key_is_not_in_repr(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", PROD)
    assert "staging-key" not in repr(load_profile("staging", url=None, readonly=None, config_path=path))


def test_api_key_command_stdout_is_the_key(tmp_path: Path) -> None:
    command = python_command("print('  k3y-from-command  '); print('login: admin')")
    path = write_config(tmp_path / "c.toml", f"[profiles.vault]\napi_key_command = '''{command}'''\n")
    profile = load_profile(None, url=None, readonly=None, config_path=path)
    assert profile.name == "vault"  # the only profile is the default
    assert profile.api_key == "k3y-from-command"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "import sys; sys.stderr.write('gpg: decryption failed\\n'); sys.exit(3)",
            "exited with status 3: gpg: decryption failed",
        ),
        ("pass", "printed nothing"),
    ],
)
def test_api_key_command_failure_is_a_clear_error(tmp_path: Path, code: str, expected: str) -> None:
    path = write_config(tmp_path / "c.toml", f"[profiles.vault]\napi_key_command = '''{python_command(code)}'''\n")
    with pytest.raises(ConfigError) as caught:
        load_profile("vault", url=None, readonly=None, config_path=path)
    assert "profile 'vault': api_key_command" in str(caught.value)
    assert expected in str(caught.value)


def test_api_key_command_not_found(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", "[profiles.vault]\napi_key_command = 'no-such-protect-key-tool show x'\n")
    with pytest.raises(ConfigError, match="command not found: no-such-protect-key-tool"):
        load_profile("vault", url=None, readonly=None, config_path=path)


def test_missing_key_says_how_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_profile(None, url=None, readonly=None, config_path=tmp_path / "absent.toml")
    message = str(caught.value)
    assert "no API key for profile 'default'" in message
    assert "PROTECT_CONSOLE_API_KEY" in message and "api_key_command" in message
    assert "never accepted on the command line" in message


def test_api_key_env_naming_an_unset_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", PROD)
    with pytest.raises(ConfigError, match="api_key_env names PROD_PROTECT_KEY, which is not set"):
        load_profile("prod", url=None, readonly=None, config_path=path)


def test_bad_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", '[profiles.prod]\nurl = "https://x.example\nreadonly = true\n')
    with pytest.raises(ConfigError) as caught:
        load_profile("prod", url=None, readonly=None, config_path=path)
    assert "is not valid TOML" in str(caught.value) and "line 2" in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "[profiles.prod]\napi_key = 'k'\nreadonly = 'maybe'\n",
            "profiles.prod.readonly: Input should be a valid boolean",
        ),
        ("[profiles.prod]\napi_key = 'k'\napi_keyy = 'typo'\n", "profiles.prod.api_keyy: unknown setting"),
        ("[profiles.prod]\napi_key = 'k'\nurl = 'ftp://x'\n", "profiles.prod.url: must be an http:// or https:// URL"),
        (
            "[profiles.prod]\napi_key = 'k'\napi_key_env = 'K'\n",
            "give only one of api_key, api_key_env, api_key_command",
        ),
        (
            "default_profile = 'nope'\n[profiles.prod]\napi_key = 'k'\n",
            "default_profile 'nope' has no [profiles.nope] table",
        ),
        ("profiles = 3\n", "profiles: Input should be a valid dictionary"),
    ],
)
def test_wrong_values_name_the_field(tmp_path: Path, body: str, expected: str) -> None:
    path = write_config(tmp_path / "c.toml", body)
    with pytest.raises(ConfigError) as caught:
        load_profile(None, url=None, readonly=None, config_path=path)
    assert expected in str(caught.value)


def test_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", PROD)
    with pytest.raises(ConfigError, match=r"unknown profile 'qa' \(profiles in .*: prod, staging\)"):
        load_profile("qa", url=None, readonly=None, config_path=path)


def test_bad_url_flag_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", "k")
    with pytest.raises(ConfigError, match="--url: must be an http:// or https:// URL"):
        load_profile(None, url="localhost:8080", readonly=None, config_path=tmp_path / "absent.toml")
    monkeypatch.setenv("PROTECT_CONSOLE_URL", "nonsense")
    with pytest.raises(ConfigError, match="PROTECT_CONSOLE_URL: must be"):
        load_profile(None, url=None, readonly=None, config_path=tmp_path / "absent.toml")


def test_readable_file_with_inline_key_warns(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", PROD, mode=0o644)
    warnings: list[str] = []
    load_profile("staging", url=None, readonly=None, config_path=path, warn=warnings.append)
    assert len(warnings) == 1 and "chmod 600" in warnings[0] and "mode 644" in warnings[0]

    path.chmod(0o600)
    warnings.clear()
    load_profile("staging", url=None, readonly=None, config_path=path, warn=warnings.append)
    assert warnings == []


def test_readable_file_without_inline_key_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path / "c.toml", "[profiles.prod]\napi_key_env = 'PROD_PROTECT_KEY'\n", mode=0o644)
    monkeypatch.setenv("PROD_PROTECT_KEY", "k")
    warnings: list[str] = []
    load_profile(None, url=None, readonly=None, config_path=path, warn=warnings.append)
    assert warnings == []


def test_warning_goes_to_stderr_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "c.toml", PROD, mode=0o640)
    load_profile("staging", url=None, readonly=None, config_path=path)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("warning: ") and "readable by other users" in captured.err
    assert "staging-key" not in captured.err


def test_cli_has_no_api_key_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from console.cli import main

    assert main(["users", "list", "--api-key", "secret"]) == 2
    assert "unrecognized arguments: --api-key secret" in capsys.readouterr().err
