"""Access tokens for linked accounts: refreshed before expiry, one refresh at a time per user.

A refresh rotates the refresh token and the used one soon stops working, so the answer is written
to the token store (committed) before the new access token is handed to anyone: a crash right
after the token response never strands the account. A refusal by Smartcar marks the account
refused until ``locktwin smartcar connect`` links it again.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import anyio

from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.metrics import TOKEN_REFRESHES

from .client import SmartcarClient
from .tokens import TokenStore

__all__ = ["RECONNECT_MESSAGE", "TokenManager"]

log = logging.getLogger(__name__)

RECONNECT_MESSAGE = "reconnect with locktwin smartcar connect"

RefusalHook = Callable[[str], Awaitable[None]]


class TokenManager:
    def __init__(
        self,
        *,
        client: SmartcarClient,
        store: TokenStore,
        refresh_margin: float,
        on_refused: RefusalHook | None = None,
    ) -> None:
        self._client = client
        self._store = store
        self._refresh_margin = refresh_margin
        self._on_refused = on_refused
        self._locks: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)
        self.refreshes = 0

    async def access_token(self, user_id: str, *, stale: str | None = None) -> str:
        """A valid access token of ``user_id``; ``stale`` is one Smartcar just refused (refresh it)."""
        async with self._locks[user_id]:
            account = self._store.account(user_id)
            if account is None:
                raise VendorError(ErrorCode.AUTH_FAILED, f"no linked Smartcar account; {RECONNECT_MESSAGE}")
            if account.refused:
                raise VendorError(ErrorCode.AUTH_FAILED, f"Smartcar refused the token; {RECONNECT_MESSAGE}")
            fresh = account.access_expires_at - self._refresh_margin > time.time()
            if fresh and account.access_token != stale:
                return account.access_token
            try:
                tokens = await self._client.refresh(account.refresh_token)
            except VendorError as exc:
                TOKEN_REFRESHES.labels(vendor="smartcar", outcome="failed").inc()
                if exc.info.code is ErrorCode.AUTH_FAILED:
                    await self.refuse(user_id)
                    raise VendorError(
                        ErrorCode.AUTH_FAILED,
                        f"Smartcar refused the refresh token; {RECONNECT_MESSAGE}",
                        vendor_code=exc.info.vendor_code,
                        vendor_message=exc.info.vendor_message,
                    ) from None
                raise
            # durable before use: the old refresh token is about to stop working
            saved = self._store.save_tokens(user_id, tokens)
            self.refreshes += 1
            TOKEN_REFRESHES.labels(vendor="smartcar", outcome="ok").inc()
            log.info("smartcar: refreshed the access token of user %s", user_id)
            return saved.access_token

    async def refuse(self, user_id: str) -> None:
        """Smartcar will not take this account's tokens any more."""
        self._store.mark_refused(user_id)
        log.warning("smartcar: tokens of user %s refused; %s", user_id, RECONNECT_MESSAGE)
        if self._on_refused is not None:
            await self._on_refused(user_id)
