"""``locktwin smartcar ...``: link a Smartcar account (OAuth2 Connect) and list linked accounts.

``connect`` prints the Connect URL, reads the code (or the whole redirect URL) from ``--code`` or
standard input, exchanges it and stores the tokens under the data dir. Tokens are never printed.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
from pydantic import ValidationError

from twin.adapter import VendorError
from twin.config import load_settings, load_vendor_settings

from .client import SmartcarClient
from .link import link
from .settings import SmartcarSettings
from .tokens import TokenStore

__all__ = ["connect_url", "link_account", "main"]


def connect_url(settings: SmartcarSettings, *, state: str) -> str:
    """The Smartcar Connect page where a user approves access to their vehicles."""
    query = {
        "response_type": "code",
        "client_id": settings.client_id,
        "redirect_uri": settings.redirect_uri,
        "scope": " ".join(settings.scope),
        "approval_prompt": "force",
        "mode": settings.mode,
        "state": state,
    }
    return f"{settings.connect_url}?{urlencode(query)}"


def _code_from(answer: str, *, state: str) -> str:
    """Accept the bare code or the redirect URL (whose ``state`` must match)."""
    answer = answer.strip()
    if "?" not in answer and "=" not in answer:
        return answer
    query = parse_qs(urlsplit(answer).query or answer)
    if "error" in query:
        raise ValueError(f"Smartcar Connect answered {query['error'][0]}")
    if query.get("state", [state])[0] != state:
        raise ValueError("the redirect's state does not match this connect attempt")
    codes = query.get("code")
    if not codes:
        raise ValueError("no code in the redirect URL")
    return codes[0]


async def link_account(settings: SmartcarSettings, *, data_dir: Path, code: str) -> tuple[str, int]:
    """Exchange ``code``, store the tokens (durably, first), return the user id and vehicle count."""
    store = TokenStore(directory=data_dir)
    store.open()
    client = SmartcarClient(settings=settings)
    await client.start()
    try:
        return await link(client, store, code=code, page_size=settings.page_size)
    finally:
        await client.stop()
        store.close()


def load(config: Path | None, data_dir: Path | None) -> tuple[SmartcarSettings, Path]:
    """The bridge's own settings (``[vendors.smartcar]`` of ``config`` under ``LOCKTWIN_SMARTCAR_*``) and
    its token folder: ``--data-dir``, else ``data_dir``, else ``LOCKTWIN_DATA_DIR``/smartcar."""
    core = load_settings(config)
    loaded = load_vendor_settings(SmartcarSettings, core.vendors.get("smartcar", {}))
    settings = loaded if isinstance(loaded, SmartcarSettings) else SmartcarSettings.model_validate(loaded)
    return settings, data_dir or settings.data_dir or core.data_dir / "smartcar"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="locktwin smartcar", description="Smartcar accounts of locktwin")
    commands = parser.add_subparsers(dest="command", required=True)
    connect = commands.add_parser("connect", help="link a Smartcar account")
    connect.add_argument("--code", help="the code (or redirect URL) Smartcar Connect returned")
    connect.add_argument("--state", default=None, help="state to put in the Connect URL")
    accounts = commands.add_parser("accounts", help="list linked accounts")
    for command in (connect, accounts):
        command.add_argument("--config", type=Path, help="TOML file (LOCKTWIN_* variables override it)")
        command.add_argument("--data-dir", type=Path, default=None, help="token folder (default data/smartcar)")
    args = parser.parse_args(list(argv))
    try:
        settings, data_dir = load(args.config, args.data_dir)
    except ValidationError as exc:
        # the field names only: an error's input could hold the client secret
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"smartcar settings are incomplete (LOCKTWIN_SMARTCAR_*): {problems}", file=sys.stderr)  # noqa: T201
        return 2
    except (OSError, ValueError) as exc:
        print(f"smartcar settings are unreadable: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if args.command == "accounts":
        store = TokenStore(directory=data_dir)
        store.open()
        try:
            for account in store.accounts():
                status = "refused: reconnect" if account.refused else "linked"
                vehicles = len(store.vehicles(account.user_id))
                print(f"{account.user_id}\t{status}\t{vehicles} vehicles")  # noqa: T201
        finally:
            store.close()
        return 0
    state = args.state or secrets.token_urlsafe(12)
    print("Open this URL, approve access, then paste the redirect URL or the code:")  # noqa: T201
    print(connect_url(settings, state=state))  # noqa: T201
    answer = args.code if args.code is not None else sys.stdin.readline()
    try:
        code = _code_from(answer, state=state)
        user_id, count = anyio.run(lambda: link_account(settings, data_dir=data_dir, code=code))
    except (ValueError, VendorError) as exc:
        print(f"connect failed: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    print(f"linked Smartcar user {user_id} with {count} vehicles in {data_dir}")  # noqa: T201
    return 0
