"""The real console in a real terminal: tmux, driven and watched through a control-mode client.

A private tmux server (its own socket, no config file) holds one 140x40 window per console run.
The benchmark talks to it through one ``tmux -C`` client on pipes, so sending a key or reading the
screen is a line on a pipe, not a new process per poll:

* ``send-keys`` types into the console's pty exactly as a keyboard would (tmux encodes the keys);
* ``capture-pane -p`` returns the screen as tmux has rendered it, i.e. what a person sees;
* tmux pushes a ``%output`` notification the moment it has read (and drawn) bytes the console wrote.

A measurement waits for a condition on the screen: after every ``%output`` (and at least every
``poll`` seconds) it captures the pane and checks. The time it reports is the arrival of the last
``%output`` before the capture that satisfied the condition (the moment tmux had drawn that frame,
independent of how often we poll), as long as that output came after the key and after the last
capture that did not show the state yet; tmux may answer a capture before it sends the %output of
what the capture shows, and then the capture's return is used (an upper bound, counted in
``stats.bounded``). The poll interval and the capture round trip are reported too.
"""

from __future__ import annotations

import os
import queue
import shlex
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

WIDTH, HEIGHT = 140, 40
# The reader thread stamps %output as it arrives: let it take the GIL within 0.5 ms, not Python's 5 ms.
sys.setswitchinterval(0.0005)


@dataclass
class Stamp:
    at: float  # perf_counter of the %output that brought the frame (or of the capture, if none came)
    captured: float  # perf_counter when the satisfying capture returned
    screen: list[str]


@dataclass
class _Stats:
    captures: int = 0
    bounded: int = 0  # frames timed by the capture's return (no %output of them seen yet): upper bounds
    capture_ms: list[float] = field(default_factory=list)


class Tmux:
    """A private tmux server plus one control-mode client; close() kills that server (and its panes)."""

    def __init__(self, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.socket = f"protect-bench-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.width, self.height = width, height
        self.stats = _Stats()
        self._folder = Path(tempfile.mkdtemp(prefix="protect-bench-tty-"))
        base = ["tmux", "-L", self.socket, "-f", "/dev/null"]
        # A placeholder window keeps the session alive while console windows come and go.
        subprocess.run(
            [
                *base,
                "new-session",
                "-d",
                "-s",
                "bench",
                "-x",
                str(width),
                "-y",
                str(height),
                "sleep 1d",
                # (not window-size manual: tmux 3.3a segfaults on new-window from a control client then)
                ";",
                "set",
                "-g",
                "default-size",
                f"{width}x{height}",
                ";",
                "set",
                "-g",
                "remain-on-exit",
                "off",
            ],
            check=True,
        )
        self._client = subprocess.Popen(
            [*base, "-C", "attach", "-t", "bench", "-f", "ignore-size"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self._replies: queue.Queue[tuple[bool, list[str]]] = queue.Queue()
        self._output = threading.Condition()
        self._last_output: dict[str, float] = {}
        self._first_output: dict[str, float] = {}
        self._output_seq = 0
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._replies.get(timeout=10)  # the attach's own (empty) reply block: commands and replies pair up from here

    # ------------------------------------------------------------ control mode
    def _lines(self) -> Iterator[tuple[float, bytes]]:
        """Control-mode lines, each with the moment the read that completed it returned.

        Whole chunks, not a line at a time: iterating the unbuffered pipe (``bufsize=0``) read it one
        byte per system call, and a scrolled frame (~30 KB, ~60 KB once tmux escapes it) then took the
        reader tens of milliseconds, which the benchmark counted as the console's latency.
        """
        assert self._client.stdout is not None
        fd = self._client.stdout.fileno()
        pending = b""
        while True:
            chunk = os.read(fd, 1 << 16)
            now = time.perf_counter()
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                yield now, line

    def _read(self) -> None:
        block: list[str] | None = None
        for now, raw in self._lines():
            line = raw.decode("utf-8", "replace")
            if block is not None:
                if line.startswith(("%end ", "%error ")):
                    self._replies.put((line.startswith("%end "), block))
                    block = None
                else:
                    block.append(line)
                continue
            if line.startswith("%begin "):
                block = []
            elif line.startswith("%output "):
                pane = line.split(" ", 2)[1]
                with self._output:
                    self._last_output[pane] = now
                    if "[?1049h" in line:  # the switch to the alternate screen: the app's first frame is coming
                        self._first_output.setdefault(pane, now)
                    self._output_seq += 1
                    self._output.notify_all()
        with self._output:
            self._output_seq += 1
            self._output.notify_all()

    def command(self, line: str, timeout: float = 10.0) -> list[str]:
        with self._lock:
            assert self._client.stdin is not None
            self._client.stdin.write(line.encode() + b"\n")
            ok, reply = self._replies.get(timeout=timeout)
        if not ok:
            raise RuntimeError(f"tmux: {line!r}: {' '.join(reply)}")
        return reply

    # ------------------------------------------------------------ windows
    def spawn(self, argv: list[str], env: dict[str, str]) -> Pane:
        """A new window that waits for Enter (``pane.go()``), then execs ``argv`` with ``env`` added."""
        script = self._folder / f"run-{time.monotonic_ns()}.sh"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        script.write_text(
            f"#!/bin/sh\n{exports}printf 'bench: press enter\\n'\nread _ignored\n"
            f"exec {' '.join(shlex.quote(a) for a in argv)}\n"
        )
        script.chmod(stat.S_IRWXU)  # the API key is in it: ours only
        pane_id, pid = self.command(
            f"new-window -d -P -F '#{{pane_id}} #{{pane_pid}}' -t bench {shlex.quote(str(script))}"
        )[0].split()
        pane = Pane(self, pane_id, int(pid))
        pane.wait_for(lambda s: any("bench: press enter" in line for line in s), timeout=10)
        return pane

    def close(self) -> None:
        try:
            self.command("kill-server", timeout=5)
        except Exception:  # noqa: BLE001 - already gone
            pass
        try:
            self._client.wait(5)
        except subprocess.TimeoutExpired:
            self._client.kill()
        for path in self._folder.iterdir():
            path.unlink()
        self._folder.rmdir()

    def __enter__(self) -> Tmux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pane:
    def __init__(self, tmux: Tmux, pane_id: str, pid: int) -> None:
        self.tmux, self.id, self.pid = tmux, pane_id, pid

    def go(self) -> float:
        """Press Enter at the waiting prompt: the command starts. Returns the moment the key was sent."""
        return self.keys("Enter")

    def keys(self, *names: str, literal: bool = False, times: int = 1) -> float:
        """Send keys (tmux names: Down, NPage, End, Escape, Enter; or text with ``literal``) ``times`` times;
        the send time."""
        flag = ("-l " if literal else "") + (f"-N {times} " if times > 1 else "")
        line = f"send-keys {flag}-t {self.id} " + " ".join(shlex.quote(n) for n in names)
        with self.tmux._output:
            self._seq_at_send = self.tmux._output_seq
        sent = time.perf_counter()
        self.tmux.command(line)
        return sent

    def screen(self) -> list[str]:
        started = time.perf_counter()
        lines = self.tmux.command(f"capture-pane -p -t {self.id}")
        self.tmux.stats.captures += 1
        self.tmux.stats.capture_ms.append((time.perf_counter() - started) * 1000)
        return lines

    def wait_for(
        self,
        condition: Callable[[list[str]], bool],
        *,
        since: float | None = None,
        timeout: float = 30.0,
        poll: float = 0.005,
    ) -> Stamp:
        """Capture after every output (and every ``poll`` s) until ``condition(screen)``.

        The frame's time: the arrival of the last %output before the satisfying capture returned, when
        that arrival is later than both ``since`` (the key) and the issue of the last capture that did
        not yet show the state; otherwise (tmux may answer a capture before it has sent the %output of
        what the capture shows) the satisfying capture's return, an upper bound.
        """
        tmux = self.tmux
        deadline = time.perf_counter() + timeout
        lower = since if since is not None else float("-inf")
        while True:
            with tmux._output:
                seq = tmux._output_seq
            issued = time.perf_counter()
            lines = self.screen()
            now = time.perf_counter()
            if condition(lines):
                last = self.last_output()
                at = last if last is not None and lower < last <= now else now
                if since is not None:
                    tmux.stats.bounded += at == now
                return Stamp(at, now, lines)
            lower = max(lower, issued)
            if now > deadline:
                tail = "\n".join(line for line in lines if line.strip())
                raise TimeoutError(
                    f"the screen did not show what was awaited within {timeout:.0f} s; it shows:\n{tail}"
                )
            with tmux._output:
                if tmux._output_seq == seq:
                    tmux._output.wait(poll)

    def wait_quiet(self, quiet: float, *, timeout: float = 30.0) -> None:
        """Until the console has written nothing and used no CPU for ``quiet`` seconds (what a key just
        caused, pages fetched ahead and deferred work included, is over). CPU is read in 10 ms ticks."""
        deadline = time.perf_counter() + timeout
        since, cpu = time.perf_counter(), self.cpu_ms()
        while True:
            time.sleep(0.02)
            now, used = time.perf_counter(), self.cpu_ms()
            last = self.last_output()
            if used != cpu or (last is not None and last > since):
                since, cpu = now, used
            elif now - since >= quiet:
                return
            if now > deadline:
                raise TimeoutError(f"the console was not quiet for {quiet:g} s within {timeout:.0f} s")

    def first_output(self) -> float | None:
        """When the pane's program switched to the alternate screen (a full-screen app's first output)."""
        with self.tmux._output:
            return self.tmux._first_output.get(self.id)

    def forget_output(self) -> None:
        with self.tmux._output:
            self.tmux._first_output.pop(self.id, None)

    def last_output(self) -> float | None:
        with self.tmux._output:
            return self.tmux._last_output.get(self.id)

    def alive(self) -> bool:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")  # exited, not yet reaped by tmux

    def wait_gone(self, timeout: float = 15.0) -> None:
        """Until the pane's process has exited (after `q`)."""
        deadline = time.perf_counter() + timeout
        while self.alive():
            if time.perf_counter() > deadline:
                try:
                    shows = "\n".join(self.screen()[-8:])
                except RuntimeError:
                    shows = "(pane gone)"
                raise TimeoutError(f"the console (pid {self.pid}) did not exit within {timeout:.0f} s:\n{shows}")
            time.sleep(0.02)

    def cpu_ms(self) -> float:
        return cpu_ms(self.pid)

    def rss_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the pane's process in MB (the console: the pane's shell execs it)."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]

    def kill(self) -> None:
        try:
            self.tmux.command(f"kill-pane -t {self.id}")
        except RuntimeError:
            pass  # already gone


def cpu_ms(pid: int) -> float:
    """User + system CPU time of a process so far (clock ticks, 10 ms apiece: sum over many keys)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def console_argv() -> list[str]:
    import sys

    return [str(Path(sys.executable).with_name("protect-console"))]


def console_env(url: str, key: str) -> dict[str, str]:
    """The console's connection through its documented variables, with an empty config folder."""
    import atexit
    import shutil

    config = tempfile.mkdtemp(prefix="protect-bench-config-")
    atexit.register(shutil.rmtree, config, ignore_errors=True)
    # Bytecode as an installed console has it (pip compiles it at install): without this, a checkout run
    # with PYTHONDONTWRITEBYTECODE (as in CI shells) compiled the console's own modules from source at
    # every start, ~50-100 ms that no user pays. Kept out of the source tree; the warm-up run writes it.
    return {
        "PROTECT_CONSOLE_URL": url,
        "PROTECT_CONSOLE_API_KEY": key,
        "XDG_CONFIG_HOME": config,
        "TERM": "tmux-256color",
        "COLORTERM": "truecolor",
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "protect-bench-pycache"),
    }
