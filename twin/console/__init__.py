"""The operator console: the fleet on a map and in a table, live, in a browser (``locktwin console``).

A person logs in with their own MQTT username and password; the console connects to the broker as
them, so the broker's ACL decides what each person sees and may do. Everything is read from and sent
through the MQTT contract. Modules: :mod:`~twin.console.app` (the console and its sessions),
:mod:`~twin.console.routes` and :mod:`~twin.console.web` (HTTP), :mod:`~twin.console.link` (a
session's MQTT connection), :mod:`~twin.console.fleet` (what a session sees),
:mod:`~twin.console.stream` (coalesced server-sent events), :mod:`~twin.console.mqtt` (clients and
PUBACK reason codes); the page itself is plain JavaScript modules in ``static/``, no build step.

Names are imported on first use: :mod:`twin.config` imports :mod:`twin.console.settings`, and the
console's modules import :mod:`twin.config`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twin.console.app import Console, LoginFailed, serve_console
    from twin.console.cli import add_console_command
    from twin.console.settings import ConsoleSettings

__all__ = ["Console", "ConsoleSettings", "LoginFailed", "add_console_command", "serve_console"]

_WHERE = {
    "Console": "twin.console.app",
    "LoginFailed": "twin.console.app",
    "serve_console": "twin.console.app",
    "add_console_command": "twin.console.cli",
    "ConsoleSettings": "twin.console.settings",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'twin.console' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
