"""``--db`` / ``PROTECT_DB``: a SQLite path or a PostgreSQL URL; anything else is one line, exit 2, nothing created.

An unreachable PostgreSQL is one line (``cannot connect to PostgreSQL at HOST:PORT: reason``), exit 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from console.server.store import BadDatabaseUrl, parse_db
from tests.helpers import run_cli
from tests.serve_helpers import free_port as closed_port  # a port nothing listens on

REPO = Path(__file__).resolve().parents[2]
FORMS = ("SQLite file path", "postgresql://user:password@host:port/dbname", "?host=/socket/dir")

BAD = {
    "other-scheme": "mysql://protect@db.internal/protect",
    "sqlite-url": "sqlite:///protect.db",
    "driver-mix": "postgresql+mysql://protect@db/protect",
    "http": "https://db.internal/protect",
    "no-slashes": "postgresql:protect@db/protect",
    "bad-port": "postgresql://protect@db.internal:http/protect",
    "port-range": "postgresql://protect@db.internal:70000/protect",
    "query-port": "postgresql://protect@/protect?host=/run/pg&port=x",
    "broken-ipv6": "postgresql://protect@[::1/protect",
    "blank": "   ",
}
COMMANDS = {
    "serve": ["serve"],
    "seed": ["seed", "--users", "1"],
    "keys-create": ["keys", "create", "--name", "ci", "--role", "admin"],
    "keys-list": ["keys", "list"],
    "demo": ["demo", "--users", "1"],
    "db-upgrade": ["db", "upgrade"],
    "db-current": ["db", "current"],
}


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and data home: whatever a command creates shows up here."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_DATA_HOME", str(work))
    monkeypatch.delenv("PROTECT_DB", raising=False)
    return work


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", list(COMMANDS.values()), ids=list(COMMANDS))
@pytest.mark.parametrize("value", list(BAD.values()), ids=list(BAD))
def test_a_db_that_is_neither_a_path_nor_a_postgresql_url_is_one_line_exit_2_nothing_created(
    isolated: Path, capsys: pytest.CaptureFixture[str], command: list[str], value: str
) -> None:
    code, out, err = run_cli(capsys, *command, "--db", value)
    assert code == 2, (code, out, err)
    line = one_error_line(err)
    for form in FORMS:
        assert form in line, line
    assert out == ""
    assert list(isolated.iterdir()) == []  # no "postgresql:" folder, no database file


@pytest.mark.parametrize("command", list(COMMANDS.values()), ids=list(COMMANDS))
def test_protect_db_is_read_like_db(isolated: Path, capsys, monkeypatch: pytest.MonkeyPatch, command) -> None:
    monkeypatch.setenv("PROTECT_DB", "mysql://protect@db.internal/protect")
    code, _out, err = run_cli(capsys, *command)
    assert code == 2 and "unsupported database URL scheme 'mysql:'" in one_error_line(err)
    assert list(isolated.iterdir()) == []


def test_protect_db_names_the_database_and_db_wins_over_it(isolated: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PROTECT_DB", str(isolated / "from-env.db"))
    code, out, err = run_cli(capsys, "db", "upgrade")
    assert code == 0 and "from-env.db" in out, err
    assert (isolated / "from-env.db").is_file()
    code, out, err = run_cli(capsys, "db", "upgrade", "--db", str(isolated / "from-flag.db"))
    assert code == 0 and (isolated / "from-flag.db").is_file()


def test_the_issue_example_no_longer_makes_a_postgresql_folder(isolated: Path) -> None:
    """`serve --db postgresql://protect@db.internal/protect` used to serve a SQLite file in ./postgresql:/."""
    target = parse_db("postgresql://protect@db.internal/protect")
    assert not target.is_sqlite and target.server == "db.internal:5432"
    assert list(isolated.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "server", "shown"),
    [
        (
            "postgresql://protect:s3cret@db.internal:6432/protect",
            "db.internal:6432",
            "postgresql://protect:***@db.internal:6432/protect",
        ),
        (
            "postgres://protect@/protect?host=/run/postgresql",
            "/run/postgresql:5432",
            "postgresql://protect@/protect?host=%2Frun%2Fpostgresql",
        ),
        ("postgresql+psycopg://u@h/d?host=/s&port=7777", "/s:7777", "postgresql://u@h/d?host=%2Fs&port=7777"),
        ("./data/protect.db", None, "data/protect.db"),
        ("~/protect.db", None, str(Path("~/protect.db").expanduser())),
    ],
)
def test_accepted_forms_and_how_they_are_shown(value: str, server: str | None, shown: str) -> None:
    target = parse_db(value)
    assert str(target) == shown  # never a password
    if server is None:
        assert target.is_sqlite
    else:
        assert target.server == server and "s3cret" not in str(target)
        assert parse_db(target.value).url == target.url  # .value round-trips (for child processes)


def test_parse_errors_are_bad_database_urls() -> None:
    for value in BAD.values():
        with pytest.raises(BadDatabaseUrl):
            parse_db(value)


@pytest.mark.parametrize("command", list(COMMANDS.values()), ids=list(COMMANDS))
def test_an_unreachable_server_is_one_line_exit_1(isolated: Path, capsys, command) -> None:
    port = closed_port()
    code, out, err = run_cli(capsys, *command, "--db", f"postgresql://protect:s3cret@127.0.0.1:{port}/protect")
    assert code == 1, (out, err)
    assert one_error_line(err) == f"error: cannot connect to PostgreSQL at 127.0.0.1:{port}: Connection refused"
    assert "s3cret" not in out + err
    assert list(isolated.iterdir()) == []


def test_a_missing_socket_directory_is_named(isolated: Path, capsys) -> None:
    code, _out, err = run_cli(capsys, "serve", "--db", f"postgresql://protect@/protect?host={isolated}/nowhere")
    assert code == 1
    expected = f"error: cannot connect to PostgreSQL at {isolated}/nowhere:5432: No such file or directory"
    assert one_error_line(err) == expected


def test_serve_on_an_unreachable_server_prints_no_traceback(tmp_path: Path) -> None:
    port = closed_port()
    result = subprocess.run(
        [sys.executable, "-m", "console", "serve", "--db", f"postgresql://protect@127.0.0.1:{port}/protect"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**{k: v for k, v in os.environ.items() if k != "PROTECT_DB"}, "XDG_DATA_HOME": str(tmp_path)},
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: cannot connect to PostgreSQL at 127.0.0.1:{port}: Connection refused"
    assert result.stdout == ""


def test_a_missing_database_on_a_running_server_is_named(pg_cluster, isolated: Path, capsys) -> None:
    url = pg_cluster.url("protect_no_such_database")
    code, _out, err = run_cli(capsys, "db", "current", "--db", url)
    assert code == 1
    line = one_error_line(err)
    assert line.startswith("error: cannot connect to PostgreSQL at "), line
    assert 'database "protect_no_such_database" does not exist' in line, line
