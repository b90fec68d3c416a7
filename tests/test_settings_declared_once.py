"""Each setting is declared once (``console.models.SETTINGS``); the service, the CLI, the console and
the README's table are derived from it, and the enums are the only lists of roles and statuses.

The main test changes one range in a copy of the declaration, one line and nothing else, and checks
that a real service on 127.0.0.1, the CLI and the console's Settings editor all take the new range.
Run this module as a script (``python -m tests.test_settings_declared_once --write-readme``) to
rewrite the README's table from the declaration.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from console import models

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TABLE_START = "<!-- settings table: generated from console.models.SETTINGS (tests/test_settings_declared_once.py) -->"
TABLE_END = "<!-- end of the settings table -->"

KEY = "push.timeoutSeconds"  # the setting whose range the copy changes
NEW_HIGH = 600  # declared 30..300: 600 in the copy


# ------------------------------------------------------------ the declaration and the models


def _leaves(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> FieldInfo of every value in a settings model (nested models walked)."""
    found: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        kinds = (info.annotation, *getattr(info.annotation, "__args__", ()))
        nested = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if nested is not None:
            found.update(_leaves(nested, f"{prefix}{name}."))
        else:
            found[prefix + name] = info
    return found


def _bounds(info: Any) -> tuple[int | None, int | None]:
    low = high = None
    for rule in info.metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    return low, high


def test_every_field_of_the_settings_models_is_a_declared_setting_with_its_range_and_meaning() -> None:
    declared = [setting.key for setting in models.SETTINGS]
    assert len(set(declared)) == len(declared)
    defaults = models.ProtectSettings()
    for model in (models.ProtectSettings, models.ProtectSettingsPatch):
        leaves = _leaves(model)
        assert list(leaves) == declared, f"{model.__name__}'s fields and SETTINGS disagree"
        for setting in models.SETTINGS:
            info = leaves[setting.key]
            assert _bounds(info) == (setting.low, setting.high), setting.key
            assert info.description == setting.meaning
    for setting in models.SETTINGS:
        assert setting.read(defaults) == setting.default and type(setting.read(defaults)) is type(setting.default)
        assert setting.meaning and setting.label
        assert (setting.range is None) == setting.is_bool, f"{setting.key}: a number has a range, on/off has none"


def test_the_cli_takes_names_and_choices_from_the_declaration_and_the_enums() -> None:
    from console.cli import build_parser, find_setting

    for setting in models.SETTINGS:
        assert find_setting(setting.key) is setting
        assert all(find_setting(alias) is setting for alias in setting.aliases)

    def choices(*path: str) -> list[str]:
        parser: Any = build_parser()
        for word in path:
            sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
            parser = sub.choices[word]
        return next(a.choices for a in parser._actions if a.choices and a.dest in ("role", "status"))

    assert choices("keys", "create") == [role.value for role in models.Role]
    assert choices("attempts") == [status.value for status in models.PushStatus]
    assert choices("demo") == [role.value for role in models.Role if role is not models.Role.SERVICE]


# ------------------------------------------------------------ the README's table


def settings_table() -> str:
    """The README's settings table, from the declaration."""
    lines = [TABLE_START, "| Setting | Default | Allowed | Meaning |", "|---|---|---|---|"]
    for s in models.SETTINGS:
        allowed = "on / off" if s.range is None else f"{s.low:,}–{s.high:,} {s.unit}".strip()
        lines.append(f"| `{s.key}` | {s.show(s.default)} | {allowed} | {s.meaning} |")
    lines.append(TABLE_END)
    return "\n".join(lines)


def _readme_table(text: str) -> str:
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    assert start >= 0 and end > start, "the README has no settings table between the markers"
    return text[start : end + len(TABLE_END)]


def test_the_readme_settings_table_is_the_declaration() -> None:
    shown = _readme_table(README.read_text(encoding="utf-8"))
    assert shown == settings_table(), (
        "README's settings table is not the declaration: run `python -m tests.test_settings_declared_once --write-readme`"
    )


def _write_readme() -> None:
    text = README.read_text(encoding="utf-8")
    README.write_text(text.replace(_readme_table(text), settings_table()), encoding="utf-8")


# ------------------------------------------------------------ one line changed: everything follows


def _changed_copy(where: Path) -> Path:
    """A copy of the ``console`` package whose declaration allows KEY up to NEW_HIGH: one line differs."""
    shutil.copytree(ROOT / "console", where / "console", ignore=shutil.ignore_patterns("__pycache__"))
    source = (ROOT / "console" / "models.py").read_text(encoding="utf-8")
    low, high = models.SETTING[KEY].low, models.SETTING[KEY].high
    entry = re.compile(rf'(Setting\(\s*"{re.escape(KEY)}".*?\bhigh=){high:_}\b', re.S)
    changed, count = entry.subn(rf"\g<1>{NEW_HIGH}", source, count=1)
    assert count == 1, f"the declaration of {KEY} has no high={high:_}"
    diff = [line for line in difflib.ndiff(source.splitlines(), changed.splitlines()) if line[:1] in "+-"]
    assert len(diff) == 2, diff  # one line out, one line in
    assert low is not None and high is not None and high < NEW_HIGH
    (where / "console" / "models.py").write_text(changed, encoding="utf-8")
    return where


def test_a_range_changed_in_the_declaration_alone_reaches_the_service_the_cli_and_the_console(tmp_path: Path) -> None:
    copy = _changed_copy(tmp_path / "changed")
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(copy), str(ROOT)]),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "COLUMNS": "400",
    }
    for name in ("PROTECT_CONSOLE_PROFILE", "PROTECT_CONSOLE_URL", "PROTECT_CONSOLE_API_KEY", "PROTECT_CONSOLE_DEBUG"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_settings_declared_once", "--probe", str(report)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(report.read_text())
    low = models.SETTING[KEY].low

    assert seen["console_package"].startswith(str(copy)), "the probe must run the changed copy"
    assert seen["declared"] == [low, NEW_HIGH]
    # The service: the new top is accepted, one more is a 422 naming the field.
    assert seen["service"]["accepted"] == [200, NEW_HIGH]
    status, message = seen["service"]["refused"]
    assert status == 422 and KEY in message
    # The CLI: a value above the old top goes through; one over the new top is refused naming the new range.
    code, out, _err = seen["cli"]["accepted"]
    assert code == 0 and out.strip().endswith(f"-> {NEW_HIGH - 50}")
    assert seen["cli"]["server_after_accepted"] == NEW_HIGH - 50
    code, _out, err = seen["cli"]["refused"]
    assert code == 2 and f"{KEY}: must be between {low} and {NEW_HIGH}, got {NEW_HIGH + 1}" in err
    # The console: its list says the new range; the editor saves a value above the old top and refuses one over.
    assert f"allowed {low}-{NEW_HIGH} seconds" in seen["console"]["listed"]
    assert f"allowed {low}-{NEW_HIGH}" in seen["console"]["prompt_label"]
    assert seen["console"]["server_after_accepted"] == NEW_HIGH - 100
    assert seen["console"]["refused_still_open"] is True
    assert KEY in seen["console"]["refused_error"] and str(NEW_HIGH) in seen["console"]["refused_error"]


async def _probe() -> dict[str, Any]:
    """Run in a child process on the changed copy: drive the service, the CLI and the console, write what each did."""
    import httpx

    import console
    from console.cli import main
    from console.config import ConnectionProfile
    from console.models import SETTING, Role
    from console.server.app import create_app
    from console.server.runner import ServerThread
    from console.server.services.keys import create_key
    from console.server.store import open_store
    from console.tui.app import ProtectConsoleApp
    from console.tui.modals.confirm import ConfirmScreen
    from console.tui.modals.prompt import PromptScreen
    from console.tui.screens.settings import SettingsScreen
    from tests.helpers import wait_for

    setting = SETTING[KEY]
    seen: dict[str, Any] = {"console_package": console.__file__, "declared": [setting.low, setting.high]}
    high = setting.high
    assert high is not None
    data = Path(tempfile.mkdtemp(prefix="declared-once-"))
    os.environ["XDG_DATA_HOME"] = str(data)
    store = open_store(data / "protect.db")
    server = ServerThread(create_app(store))
    server.start()
    try:
        admin = create_key(store, "probe-admin", Role.ADMIN)
        settings_url = f"{server.url}/api/v2/protect/settings"
        headers = {"x-api-key": admin}

        http = httpx.AsyncClient(headers=headers)

        async def current() -> int:
            value: int = setting.read((await http.get(settings_url)).json())
            return value

        # The service.
        seen["service"] = {}
        for name, value in (("accepted", high), ("refused", high + 1)):
            etag = (await http.get(settings_url)).headers["etag"]
            answer = await http.patch(settings_url, json=setting.patch(value), headers={"If-Match": etag})
            seen["service"][name] = [
                answer.status_code,
                await current() if answer.is_success else answer.json()["message"],
            ]

        # The CLI.
        os.environ["PROTECT_CONSOLE_URL"] = server.url
        os.environ["PROTECT_CONSOLE_API_KEY"] = admin
        seen["cli"] = {}
        for name, value in (("accepted", high - 50), ("refused", high + 1)):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = await asyncio.to_thread(main, ["settings", "set", KEY, str(value), "--yes"])
            seen["cli"][name] = [code, out.getvalue(), err.getvalue()]
        seen["cli"]["server_after_accepted"] = await current()

        # The console's Settings screen and its editor.
        app = ProtectConsoleApp(ConnectionProfile("probe", server.url, admin))
        console_seen: dict[str, Any] = {}
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("3")
            await wait_for(lambda: isinstance(app.screen, SettingsScreen) and app.screen.settings is not None)
            await wait_for(lambda: app.whoami is not None)
            screen = app.screen
            assert isinstance(screen, SettingsScreen)
            options = screen.query_one("#settings-list")
            options.focus()
            while screen.focused_spec() is not setting:
                await pilot.press("down")
            console_seen["listed"] = str(options.get_option(KEY).prompt)

            async def edit(value: int) -> None:
                await pilot.press("e")
                await wait_for(lambda: isinstance(app.screen, PromptScreen))
                field = app.screen.query_one("#prompt-input")
                await pilot.press("end", *(["backspace"] * len(field.value)), *str(value), "enter")

            await edit(high - 100)
            await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(lambda: screen.settings is not None and setting.read(screen.settings) == high - 100)
            console_seen["server_after_accepted"] = await current()

            await edit(high + 1)
            prompt = app.screen
            console_seen["prompt_label"] = str(prompt.query_one("#prompt-label").content)
            await wait_for(lambda: bool(str(prompt.query_one("#prompt-error").content)))
            console_seen["refused_still_open"] = app.screen is prompt
            console_seen["refused_error"] = str(prompt.query_one("#prompt-error").content)
            await pilot.press("escape")
        seen["console"] = console_seen
        await http.aclose()
    finally:
        server.stop()
        store.dispose()
    return seen


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        Path(sys.argv[2]).write_text(json.dumps(asyncio.run(_probe())))
    elif sys.argv[1:] == ["--write-readme"]:
        _write_readme()
    else:
        sys.exit("usage: python -m tests.test_settings_declared_once --write-readme")
