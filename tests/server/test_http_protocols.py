"""The two HTTP protocols ``serve`` may run (limits.GuardedH11Protocol, httptools_protocol.GuardedHttpToolsProtocol)
answer malformed and odd requests alike: the same status where h11 decides, a clear 4xx where llhttp is
stricter, never a 500 and never a hang. Raw bytes over a real loopback socket; the parser does not depend
on the store, so SQLite only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO

import pytest

from console.server.app import create_app
from console.server.httptools_protocol import GuardedHttpToolsProtocol
from console.server.limits import ConnectionGuard, GuardedH11Protocol
from console.server.runner import ServerThread, guarded_protocol
from console.server.store import open_store
from tests.server.test_limits import closed_by_server, connect, read_response

PROTOCOLS = [GuardedHttpToolsProtocol, GuardedH11Protocol]
HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
POST = b"POST /api/systemusers HTTP/1.1\r\nHost: 127.0.0.1\r\n"

# request bytes -> the status both protocols answer
SAME_ANSWER = {
    "plain": (HEAD + b"\r\n", 200),
    "control characters in a value (h11 passes them to the app)": (HEAD + b"If-Match: a\x1b]0;x\x07b\x7f\r\n\r\n", 200),
    "UTF-8 in a value": (HEAD + "X-Name: \u202eevil 👩\r\n\r\n".encode(), 200),
    "a folded header line": (HEAD + b"X-A: a\r\n b\r\n\r\n", 200),
    "NUL in a value": (HEAD + b"X-A: a\x00b\r\n\r\n", 400),
    "a vertical tab in a value": (HEAD + b"X-A: a\x0bb\r\n\r\n", 400),
    "a bare CR in a value": (HEAD + b"X-A: a\rb\r\n\r\n", 400),
    "a space before the colon": (HEAD + b"X-A : b\r\n\r\n", 400),
    "a bad character in a name": (HEAD + b"X(A): b\r\n\r\n", 400),
    "an empty name": (HEAD + b": b\r\n\r\n", 400),
    "a non-digit Content-Length": (POST + b"Content-Length: +2\r\n\r\nab", 400),
    "two different Content-Lengths": (POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc", 400),
    "a Content-Length past 64 bits": (POST + b"Content-Length: 99999999999999999999999\r\n\r\n", 400),
    "Transfer-Encoding: gzip": (POST + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    "Transfer-Encoding: gzip, chunked": (POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
    "a non-ASCII path": ("GET /\u00e9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), 400),
    "a control character in the path": (b"GET /a\x01b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    "a space in the path": (b"GET /a b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    "a bad method": (b"G@T / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    "HTTP/1.0": (b"GET /healthz HTTP/1.0\r\n\r\n", 200),
}
# llhttp refuses what h11 admits (or the reverse): a 4xx either way
ANY_4XX = {
    "an unknown method": b"FOO /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "a lower-case method": b"get /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "bare LF line ends": b"GET /nowhere HTTP/1.1\nHost: 127.0.0.1\n\n",
    "two equal Content-Lengths": POST + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nab",
    "Content-Length and chunked": POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "an unsupported upgrade": b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    "CONNECT": b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "no Host": b"GET /nowhere HTTP/1.1\r\n\r\n",
    "a bad chunk size": POST + b"x-api-key: pc_x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # 400 or 401
}


@pytest.fixture(scope="module")
def serve(new_db) -> Iterator[Callable[[type[ConnectionGuard]], str]]:
    """``serve(protocol) -> url``: one service per protocol, on one store."""
    store = open_store(new_db())
    servers: dict[type[ConnectionGuard], ServerThread] = {}

    def start(protocol: type[ConnectionGuard]) -> str:
        if protocol not in servers:
            servers[protocol] = ServerThread(create_app(store), protocol=protocol)
            servers[protocol].start()
        return servers[protocol].url

    yield start
    for server in servers.values():
        server.stop()
    store.dispose()


def answer(url: str, data: bytes) -> int:
    with connect(url) as sock:
        sock.sendall(data)
        return read_response(sock)[0]


sqlite_only = pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)


def test_serve_runs_httptools_when_it_is_installed() -> None:
    assert guarded_protocol() is GuardedHttpToolsProtocol


@sqlite_only
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("case", SAME_ANSWER, ids=str)
def test_both_protocols_answer_the_same(serve, protocol: type[ConnectionGuard], case: str) -> None:
    data, status = SAME_ANSWER[case]
    assert answer(serve(protocol), data) == status


@sqlite_only
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("case", ANY_4XX, ids=str)
def test_where_the_parsers_differ_the_answer_is_a_4xx(serve, protocol: type[ConnectionGuard], case: str) -> None:
    assert 400 <= answer(serve(protocol), ANY_4XX[case]) < 500


@sqlite_only
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_a_head_past_16_kib_is_refused_before_it_ends(serve, protocol: type[ConnectionGuard]) -> None:
    with connect(serve(protocol)) as sock:
        sock.sendall(HEAD + b"X-A: ")
        sock.sendall(b"a" * 20_000)  # never ends: without a cap the server would buffer whatever comes
        assert read_response(sock)[0] == 400
        assert closed_by_server(sock)


@sqlite_only
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_pipelined_requests_are_answered_in_order_and_the_connection_kept(
    serve, protocol: type[ConnectionGuard]
) -> None:
    with connect(serve(protocol)) as sock:
        sock.sendall(HEAD + b"\r\n" + b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + HEAD + b"\r\n")
        answers = sock.makefile("rb")  # the answers may come in one segment: read them from one buffer
        assert [status_of_next(answers) for _ in range(3)] == [200, 404, 200]
        sock.sendall(HEAD + b"\r\n")
        assert status_of_next(answers) == 200


def status_of_next(answers: BinaryIO) -> int:
    """The status of the next answer in ``answers``, which is read to its end (by Content-Length)."""
    status = int(answers.readline().split()[1])
    length = 0
    while (line := answers.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    answers.read(length)
    return status
