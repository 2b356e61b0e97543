"""Linking an account: exchange a Connect code, learn the user id, store the tokens (durably, first)."""

from __future__ import annotations

import hashlib
import logging
import secrets

from .api import SmartcarApi
from .auth import TokenManager
from .client import SmartcarClient
from .tokens import TokenStore

__all__ = ["bootstrap", "link"]

log = logging.getLogger(__name__)

BOOTSTRAP_KEY = "auth_code_sha256"


async def link(client: SmartcarClient, store: TokenStore, *, code: str, page_size: int = 50) -> tuple[str, int]:
    """Exchange ``code``; returns the linked user id and how many vehicles it has."""
    tokens = await client.exchange_code(code)
    # the user id is not in the token answer: store the tokens under a staging name before
    # the new access token is used to ask, then under the user
    staging = f"pending-{secrets.token_hex(4)}"
    store.save_tokens(staging, tokens)
    api = SmartcarApi(
        client=client, tokens=TokenManager(client=client, store=store, refresh_margin=0.0), page_size=page_size
    )
    try:
        user = await api.user(staging)
        store.save_tokens(user.id, tokens)
    finally:
        store.delete_account(staging)
    return user.id, len(await api.vehicle_ids(user.id))


async def bootstrap(client: SmartcarClient, store: TokenStore, *, code: str, page_size: int = 50) -> str | None:
    """Exchange a configured code once (remembered by its hash); None when it was already used."""
    digest = hashlib.sha256(code.encode()).hexdigest()
    if store.meta(BOOTSTRAP_KEY) == digest:
        return None
    user_id, count = await link(client, store, code=code, page_size=page_size)
    store.set_meta(BOOTSTRAP_KEY, digest)
    log.info("smartcar: linked user %s (%d vehicles) from the configured code", user_id, count)
    return user_id
