"""The ``protect-console`` command: its modules load with the cyclic garbage collector held off.

Loading the CLI (pydantic, asyncio, the models) leaves ~30,000 objects, none of them garbage, and
the collector ran 58 times while they were made: ~12 ms of a console's start (2 cores). It is back on before any
command runs; the console then holds it off until its first screen has settled (tui/startup.py).
"""

from __future__ import annotations

import gc


def main() -> int:
    gc.disable()
    try:
        from .cli import main as run_command
    finally:
        gc.enable()
    return run_command()
