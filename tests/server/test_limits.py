"""Issue 9 item 6: bounded resources.

A body over 1 MiB is refused (413) before it is read; an unauthenticated request is refused (401) before
its body is read or parsed; idle and slow-header connections are closed after the header timeout; the
requests in progress are capped (503); and connections that never send a request cannot exhaust the
open files: ``serve`` at a 1,024 open-file limit still answers with 1,100 of them open.

The service runs on 127.0.0.1 (in this process, or as ``protect-console serve``), spoken to over raw
sockets where the point is what the server does before a request is complete.
"""

from __future__ import annotations

import json
import resource
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from console.models import Role
from console.server.app import create_app
from console.server.httptools_protocol import GuardedHttpToolsProtocol
from console.server.limits import LIMITS_ENV, MIB, GuardedH11Protocol, Limits
from console.server.runner import ServerThread
from console.server.services.keys import create_key
from console.server.store import Store, open_store
from tests.serve_helpers import Served

WAIT = 30.0  # seconds a socket waits for the server's answer (or its close): a bound, not a measurement
HUGE = 2 * MIB
USER_BODY = json.dumps({"username": "limits.user", "email": "limits.user@example.com"}).encode()


# ------------------------------------------------------------------ raw HTTP over a socket


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    return sock


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer (got {data!r})"
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-answer"
        rest += chunk
    return int(status_line.split()[1]), headers, rest[:length]


def closed_by_server(sock: socket.socket) -> bool:
    """Wait (up to WAIT) for the server to close: True on EOF or reset, False if it is still open."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# ------------------------------------------------------------------ in-process services


@pytest.fixture(scope="module")
def store(new_db) -> Iterator[Store]:
    store = open_store(new_db())
    yield store
    store.dispose()


@pytest.fixture(scope="module")
def admin_key(store: Store) -> str:
    return create_key(store, "limits-admin", Role.ADMIN)


@pytest.fixture(params=[GuardedHttpToolsProtocol, GuardedH11Protocol], ids=lambda p: p.__name__)
def serve(store: Store, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """``serve(**limits) -> url``: the service on this store with these limits, on each HTTP protocol
    ``serve`` may run (httptools' when installed, h11's otherwise)."""
    servers: list[ServerThread] = []

    def start(**limits: object) -> str:
        server = ServerThread(create_app(store, limits=Limits(**limits)), protocol=request.param)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


ROUTES = ["/api/systemusers", "/api/v2/protect/totp/verify", "/api/v2/protect/push", "/device/v1/diagnostics"]


@pytest.mark.parametrize("path", ROUTES)
def test_a_2_mib_body_is_refused_413_before_it_is_sent(serve, admin_key: str, path: str) -> None:
    url = serve()
    with connect(url) as sock:
        sock.sendall(
            head(
                "POST",
                path,
                {
                    "x-api-key": admin_key,
                    "Authorization": "Bearer pd_x",
                    "Content-Type": "application/json",
                    "Content-Length": str(HUGE),
                },
            )
        )
        sock.sendall(b'{"x": "')  # the rest never comes: the answer cannot be waiting for it
        status, headers, body = read_response(sock)
        assert status == 413, body
        assert "larger than 1048576 bytes" in json.loads(body)["message"]
        assert headers.get("connection") == "close"
        assert closed_by_server(sock)


@pytest.mark.parametrize("path", ROUTES[:3])
def test_a_chunked_body_is_refused_413_once_past_the_limit(serve, admin_key: str, path: str) -> None:
    url = serve()
    with connect(url) as sock:
        sock.sendall(
            head(
                "POST",
                path,
                {"x-api-key": admin_key, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            )
        )
        chunk = b"x" * 65536
        # One byte past 1 MiB, and no last chunk: the body never ends, and the service reads all that was sent
        # (so its close is a plain one, not a reset that could drop the answer on the way).
        for part in [chunk] * (MIB // len(chunk)) + [b"x"]:
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        status, _headers, body = read_response(sock)
        assert status == 413, body
        assert closed_by_server(sock)


def test_a_body_at_the_limit_is_read(serve, admin_key: str) -> None:
    url = serve()
    padded = b'{"searchFilter": {"searchTerm": ""}, "filter": {"username": "' + b"a" * (MIB - 80) + b'"}}'
    assert len(padded) <= MIB
    answer = httpx.post(
        f"{url}/api/search/systemusers",
        content=padded,
        headers={"x-api-key": admin_key, "content-type": "application/json"},
        timeout=WAIT,
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("path", ROUTES[:3])
@pytest.mark.parametrize("key", [None, "pc_not-a-key"])
def test_no_key_gets_401_before_the_body_is_read_or_parsed(serve, path: str, key: str | None) -> None:
    url = serve()
    headers = {"Content-Type": "application/json", **({"x-api-key": key} if key else {})}
    # Malformed, and never finished: a 422 would mean it was parsed, no answer that it is awaited.
    with connect(url) as sock:
        sock.sendall(head("POST", path, {**headers, "Content-Length": "1000"}) + b"{not json")
        status, answered, body = read_response(sock)
        assert status == 401, body
        assert answered.get("connection") == "close" and closed_by_server(sock)  # the rest is never read
    assert ("missing x-api-key" if key is None else "invalid or revoked") in json.loads(body)["message"]
    # Too large as well: refused without reading it either way.
    with connect(url) as sock:
        sock.sendall(head("POST", path, {**headers, "Content-Length": str(HUGE)}))
        status, _headers, body = read_response(sock)
    assert status in (401, 413), body


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/device/v1/diagnostics"), ("PUT", "/device/v1/settings"), ("POST", "/device/v1/pushes/x/respond")],
)
@pytest.mark.parametrize("authorization", [None, "Bearer pd_not-a-token", "Basic abc"])
def test_no_device_token_gets_401_before_the_body_is_read_or_parsed(
    serve, method: str, path: str, authorization: str | None
) -> None:
    url = serve()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": "1000",
        **({"Authorization": authorization} if authorization else {}),
    }
    with connect(url) as sock:
        sock.sendall(head(method, path, headers) + b"{not json")
        status, answered, body = read_response(sock)
        assert status == 401 and "device" in json.loads(body)["message"], body
        assert answered.get("connection") == "close" and closed_by_server(sock)


def test_enrolment_takes_no_token_so_its_body_is_validated(serve) -> None:
    answer = httpx.post(
        f"{serve()}/device/v1/enroll", content=b"{not json", timeout=WAIT, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422 and "request body" in answer.json()["message"], answer.text


@pytest.mark.parametrize("path", ROUTES[:3])
def test_a_valid_key_with_a_malformed_body_still_gets_422_naming_the_body(serve, admin_key: str, path: str) -> None:
    url = serve()
    answer = httpx.post(
        f"{url}{path}",
        content=b"{not json",
        timeout=WAIT,
        headers={"x-api-key": admin_key, "content-type": "application/json"},
    )
    assert answer.status_code == 422 and "request body" in answer.json()["message"], answer.text


def test_idle_and_slow_header_connections_are_closed_after_the_header_timeout(serve) -> None:
    url = serve(header_timeout=0.5, keep_alive=0.5)
    with connect(url) as idle, connect(url) as slow, connect(url) as kept:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # a head that never ends
        kept.sendall(head("GET", "/healthz", {}))
        assert read_response(kept)[0] == 200  # then idle on keep-alive
        assert closed_by_server(idle)
        assert closed_by_server(slow)
        assert closed_by_server(kept)
    assert httpx.get(f"{url}/healthz", timeout=WAIT).status_code == 200


def test_a_connection_sending_its_head_in_time_is_answered(serve) -> None:
    url = serve(header_timeout=60)
    with connect(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        sock.sendall(b"Host: 127.0.0.1\r\n\r\n")
        assert read_response(sock)[0] == 200


def test_requests_past_the_in_progress_cap_get_503_until_one_ends(serve, admin_key: str) -> None:
    url = serve(max_requests=2)
    held = [connect(url) for _ in range(2)]
    try:
        for sock in held:  # in progress: the key is good, the body is awaited
            sock.sendall(
                head(
                    "POST",
                    "/api/systemusers",
                    {"x-api-key": admin_key, "Content-Type": "application/json", "Content-Length": str(len(USER_BODY))},
                )
            )
        deadline = time.monotonic() + WAIT
        while True:  # the two are in progress once the service has read their heads
            answer = httpx.get(f"{url}/healthz", timeout=WAIT)
            if answer.status_code == 503 or time.monotonic() > deadline:
                break
        assert answer.status_code == 503, answer.text
        assert "busy" in answer.json()["message"] and answer.headers["retry-after"] == "1"
        held[0].sendall(USER_BODY)
        assert read_response(held[0])[0] in (201, 409)
        assert httpx.get(f"{url}/healthz", timeout=WAIT).status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_past_the_connection_cap_the_longest_idle_connection_makes_room(serve) -> None:
    url = serve(max_connections=8, header_timeout=600)
    idle = [connect(url) for _ in range(12)]
    try:
        assert httpx.get(f"{url}/healthz", timeout=WAIT).status_code == 200
        for sock in idle[:4]:  # the oldest four made room for the next four, then for the request
            sock.settimeout(WAIT)
            assert closed_by_server(sock)
    finally:
        for sock in idle:
            sock.close()


# ------------------------------------------------------------------ protect-console serve


def _serve_at_open_file_limit(tmp_path: Path, db: str, limit: int) -> Served:
    """`serve` (one process), its open-file limit then lowered to ``limit`` (prlimit: for the files it opens next)."""
    served = Served(db=db, home=tmp_path / "serve").start()
    assert served.proc is not None
    resource.prlimit(served.proc.pid, resource.RLIMIT_NOFILE, (limit, limit))
    return served


def test_1100_idle_connections_do_not_take_serve_down_at_1024_open_files(new_db, tmp_path: Path) -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1400:
        pytest.skip("this test needs 1,100 sockets of its own")
    resource.setrlimit(
        resource.RLIMIT_NOFILE,
        (max(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1400), resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
    )
    served = _serve_at_open_file_limit(tmp_path, new_db(), 1024)
    idle: list[socket.socket] = []
    try:
        for _ in range(1100):
            idle.append(connect(served.url))
        answer = httpx.get(f"{served.url}/healthz", timeout=WAIT)
        assert answer.status_code == 200, answer.text
        idle[0].settimeout(WAIT)
        assert closed_by_server(idle[0])  # the longest idle made room
    finally:
        for sock in idle:
            sock.close()
        served.stop()
    assert "Too many open files" not in served.log.read_text()


def test_serve_workers_close_idle_connections_after_the_configured_timeout(
    new_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LIMITS_ENV, Limits(header_timeout=0.5).to_env())
    served = Served(db=new_db(), home=tmp_path / "serve", workers=2).start()
    try:
        with connect(served.url) as idle:
            assert closed_by_server(idle)
        assert httpx.get(f"{served.url}/healthz", timeout=WAIT).status_code == 200
    finally:
        served.stop()
