"""Connection profiles: TOML under the XDG config dir, overridden by the environment.

(Stub: the loader is being written; ConnectionProfile is the contract the TUI and CLI use.)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ConnectionProfile:
    """Everything needed to talk to one backend, already resolved."""

    name: str
    url: str
    api_key: str = field(repr=False)  # resolved from api_key/api_key_env/api_key_command; never printed
    readonly: bool = False
    theme: str = "textual-dark"
