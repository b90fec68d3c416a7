"""What the CLI (and the console's error banner) says when the URL, the key or the network is wrong.

Each message names the flag, variable or profile field at fault, never repeats a credential, and a
server that never answers is given up on within the configured timeout.
"""

from __future__ import annotations

import asyncio
import io
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.client import BackendUnavailable, InvalidConnection, ProtectClient
from console.config import ENV_API_KEY, ENV_TIMEOUT, ENV_URL
from tests.helpers import run_cli as run

SECRET = "s3cret-Pa55"  # a password or key fragment that must never be shown


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real config file or environment; a key that is well-formed unless a test says otherwise."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in (ENV_URL, "PROTECT_CONSOLE_PROFILE", "PROTECT_CONSOLE_DEBUG", ENV_TIMEOUT):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENV_API_KEY, "k")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert "unexpected" not in lines[0], lines[0]
    return lines[0]


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xdg" / "protect-console" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port whose connections are accepted by the kernel (backlog) but never answered."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A server that accepts connections (listed), but never writes a byte back."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)  # accept() wakes up to see the test is over
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], held
    finally:
        stop.set()
        thread.join()
        listener.close()
        for conn in held:
            conn.close()


# ------------------------------------------------------------------ malformed URLs

MALFORMED_URLS = {
    "http://[::1": "closing ]",
    "htp://x": "http:// or https://",
    "http://": "no host name",
    "http://:8080": "no host name",
    "http:///api": "no host name",
    "http://x:notaport": "invalid port",
    "http://x:99999": "invalid port",
    "http://x:0": "invalid port",
    "http://x:80:80": "more than one ':'",
    "http://[zz]": "invalid IPv6 address",
    "http://[::1]x:1": ":PORT after the IPv6 address",
    "http://999.1.1.1:1": "invalid IPv4 address",
    "http://-x-": "invalid host name",
    "http://a..b": "invalid host name",
    "http://xn--": "invalid host name",
    "http://ex%ample": "invalid host name",
    "http://127.0.0.1:1?q=1": "query",
    "http://127.0.0.1:1#top": "fragment",
}


@pytest.mark.parametrize("url", sorted(MALFORMED_URLS))
def test_malformed_url_flag_names_the_flag_and_the_problem(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "users", "list", "--url", url)
    line = one_error_line(err)
    assert code == 1 and out == ""
    assert line.startswith("error: --url: ")
    assert MALFORMED_URLS[url] in line


def test_malformed_url_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_URL, "http://[::1")
    code, _out, err = run(capsys, "users", "list")
    assert code == 1
    assert one_error_line(err).startswith(f"error: {ENV_URL}: ")


def test_malformed_url_in_a_profile_names_the_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, '[profiles.prod]\nurl = "http://x:notaport"\n')
    code, _out, err = run(capsys, "users", "list")
    line = one_error_line(err)
    assert code == 1
    assert str(path) in line and "profiles.prod.url" in line and "invalid port" in line


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:8080",
        "https://protect.example.com/prefix/",
        "http://é.example:8080",
        "http://a_b:8080",
        "HTTP://127.0.0.1",
    ],
)
def test_well_formed_urls_are_accepted(url: str) -> None:
    from console.config import load_profile

    assert load_profile(None, url=url, readonly=None).url == url.rstrip("/").replace("HTTP://", "http://")


# ------------------------------------------------------------------ credentials in URLs


@pytest.mark.parametrize(
    "url",
    [
        f"http://admin:{SECRET}@127.0.0.1:{{port}}",
        f"http://{SECRET}@127.0.0.1:{{port}}",
        f"http://admin:{SECRET}@[::1]:{{port}}/api",
    ],
)
def test_password_in_the_url_flag_is_refused_and_never_shown(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "users", "list", "--url", url.format(port=free_port()))
    line = one_error_line(err)
    assert code == 1
    assert "user name or password" in line and line.startswith("error: --url: ")
    assert SECRET not in out + err


def test_password_in_a_profile_url_is_refused_and_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(tmp_path, f'[profiles.prod]\nurl = "https://admin:{SECRET}@protect.example.com"\n')
    code, out, err = run(capsys, "users", "list")
    line = one_error_line(err)
    assert code == 1 and "profiles.prod.url" in line and "user name or password" in line
    assert SECRET not in out + err


def test_client_masks_a_password_in_its_messages() -> None:
    """The client is used without the profile checks too (tests, the demo): its messages mask the password."""
    port = free_port()

    async def go() -> str:
        async with ProtectClient(f"http://admin:{SECRET}@127.0.0.1:{port}", "k", retries=0) as client:
            with pytest.raises(BackendUnavailable) as caught:
                await client.whoami()
            return str(caught.value)

    message = asyncio.run(go())
    assert SECRET not in message
    assert f"http://admin:***@127.0.0.1:{port}" in message and "connection refused" in message


# ------------------------------------------------------------------ malformed keys

BAD_KEYS = {
    "é": "non-ASCII",
    f"{SECRET}\u00a0tail": "non-ASCII",
    f"{SECRET}\r\nX-Injected: 1": "line break",
    f"{SECRET}\ntail": "line break",
    f"{SECRET}\ttail": "space or control character",
    f"{SECRET} tail": "space or control character",
    f"{SECRET}\x1btail": "space or control character",
}


@pytest.mark.parametrize("key", list(BAD_KEYS), ids=range(len(BAD_KEYS)))
def test_malformed_key_in_the_environment_names_the_variable_not_the_key(
    key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], silent_listener: int
) -> None:
    monkeypatch.setenv(ENV_API_KEY, key)
    # A server that would hang: the key is refused before anything is sent.
    code, out, err = run(capsys, "users", "list", "--url", f"http://127.0.0.1:{silent_listener}")
    line = one_error_line(err)
    assert code == 1
    assert line.startswith(f"error: ${ENV_API_KEY}: the API key contains") and BAD_KEYS[key] in line
    assert SECRET not in out + err and "tail" not in err


def test_malformed_key_from_api_key_env_names_that_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV_API_KEY)
    monkeypatch.setenv("PROD_KEY", f"{SECRET}\r\ntail")
    write_config(tmp_path, '[profiles.prod]\napi_key_env = "PROD_KEY"\n')
    code, out, err = run(capsys, "users", "list")
    line = one_error_line(err)
    assert code == 1
    assert "profile 'prod'" in line and "$PROD_KEY" in line and "line break" in line
    assert SECRET not in out + err


def test_malformed_key_in_the_file_names_the_profile_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV_API_KEY)
    path = write_config(tmp_path, f'[profiles.prod]\napi_key = "{SECRET}é"\n')
    code, out, err = run(capsys, "users", "list")
    line = one_error_line(err)
    assert code == 1
    assert "profile 'prod': api_key in" in line and str(path) in line and "non-ASCII" in line
    assert SECRET not in out + err


def test_malformed_key_from_api_key_command_names_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV_API_KEY)
    write_config(tmp_path, f"[profiles.prod]\napi_key_command = \"printf '{SECRET}\\\\tx'\"\n")
    code, out, err = run(capsys, "users", "list")
    line = one_error_line(err)
    assert code == 1
    assert "api_key_command" in line and "space or control character" in line
    assert SECRET not in out + err


def test_client_never_sends_or_shows_a_key_it_cannot_put_in_a_header(backend: Any) -> None:
    """Without the profile checks (the client used directly): a clear refusal, no retries, no key shown."""

    async def go(key: str) -> str:
        with pytest.raises(InvalidConnection) as caught:
            async with ProtectClient(backend.url, key) as client:
                await client.whoami()
        return str(caught.value)

    for key in (f"{SECRET}é", f"{SECRET}\r\nX-Injected: 1"):
        message = asyncio.run(go(key))
        assert "API key" in message and SECRET not in message and "Injected" not in message


# ------------------------------------------------------------------ unreachable and silent servers


def test_refused_connection_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, _out, err = run(capsys, "users", "list", "--url", f"http://127.0.0.1:{port}")
    line = one_error_line(err)
    assert code == 1 and f"cannot reach http://127.0.0.1:{port}: connection refused" in line


def test_unknown_host_says_the_name_does_not_resolve(capsys: pytest.CaptureFixture[str]) -> None:
    # .invalid never resolves (RFC 6761).
    code, _out, err = run(capsys, "users", "list", "--url", "http://protect.invalid:8080")
    line = one_error_line(err)
    assert code == 1 and "http://protect.invalid:8080" in line and "could not be resolved" in line


def test_server_that_never_accepts_is_given_up_on_within_the_timeout(
    silent_listener: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_TIMEOUT, "0.5")
    code, _out, err = run(capsys, "users", "list", "--url", f"http://127.0.0.1:{silent_listener}")
    assert code == 1
    assert one_error_line(err) == f"error: no answer from http://127.0.0.1:{silent_listener} within 0.5 s"


def test_server_that_accepts_but_never_answers_is_given_up_on_within_the_profile_timeout(
    silent_server: tuple[int, list[socket.socket]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, _held = silent_server
    write_config(tmp_path, f'[profiles.slow]\nurl = "http://127.0.0.1:{port}"\ntimeout = 0.7\n')
    code, _out, err = run(capsys, "settings", "get")
    assert code == 1
    assert one_error_line(err) == f"error: no answer from http://127.0.0.1:{port} within 0.7 s"


def test_the_timeout_bounds_the_retries_not_each_attempt(silent_server: tuple[int, list[socket.socket]]) -> None:
    """Retries fit inside the timeout: when it is up the call ends, however many retries were allowed."""
    port, held = silent_server

    async def go() -> str:
        async with ProtectClient(f"http://127.0.0.1:{port}", "k", retries=50, timeout=0.6) as client:
            with pytest.raises(BackendUnavailable) as caught:
                await client.whoami()
            return str(caught.value)

    assert asyncio.run(go()) == f"no answer from http://127.0.0.1:{port} within 0.6 s"
    assert len(held) == 1  # one attempt used the whole time; none of the 50 retries was sent after it


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "601"])
def test_bad_timeout_in_the_environment_names_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_TIMEOUT, value)
    code, _out, err = run(capsys, "users", "list")
    assert code == 1 and one_error_line(err).startswith(f"error: {ENV_TIMEOUT}: must be a number of seconds")


def test_bad_timeout_in_a_profile_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(tmp_path, "[profiles.prod]\ntimeout = 0\n")
    code, _out, err = run(capsys, "users", "list")
    line = one_error_line(err)
    assert code == 1 and "profiles.prod.timeout" in line and "from 0.1 to 600" in line


# ------------------------------------------------------------------ the console shows the same


def test_console_banner_shows_the_same_clean_message(silent_listener: int) -> None:
    from console.tui.widgets.error_banner import describe_error

    async def go() -> BackendUnavailable:
        async with ProtectClient(f"http://127.0.0.1:{silent_listener}", "k", timeout=0.3) as client:
            with pytest.raises(BackendUnavailable) as caught:
                await client.whoami()
            return caught.value

    shown = describe_error(asyncio.run(go()))
    assert shown == f"Backend unavailable: no answer from http://127.0.0.1:{silent_listener} within 0.3 s"


def test_errors_raised_together_are_reported_by_their_first_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Requests run concurrently (a task group) fail as an ExceptionGroup: the reason is shown, not the group."""
    import console.cli

    async def failing_together(_client: Any, _args: Any) -> int:
        raise ExceptionGroup(
            "unhandled errors in a TaskGroup",
            [ValueError("other"), BackendUnavailable("cannot reach http://127.0.0.1:9: connection refused")],
        )

    monkeypatch.setattr(console.cli, "users_list", failing_together)
    code, _out, err = run(capsys, "users", "list", "--url", "http://127.0.0.1:9")
    assert code == 1
    assert one_error_line(err) == "error: cannot reach http://127.0.0.1:9: connection refused"


def test_the_console_gives_up_within_its_profile_timeout() -> None:
    """The full-screen console's client takes the profile's `timeout`, as the CLI twin's does."""
    from console.config import ConnectionProfile
    from console.tui.app import ProtectConsoleApp

    app = ProtectConsoleApp(ConnectionProfile("p", "http://127.0.0.1:9", "k", timeout=2.5))
    assert app.api.timeout == 2.5
