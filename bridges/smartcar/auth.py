"""Access tokens for linked accounts: refreshed before expiry, one refresh at a time per user
(:class:`twin.http.TokenRefresher`).

A refresh rotates the refresh token and the used one soon stops working, so the answer is written
to the token store (committed) before the new access token is handed to anyone: a crash right
after the token response never strands the account. A refusal by Smartcar marks the account
refused until ``locktwin smartcar connect`` links it again.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable

from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.http import Token, TokenRefresher

from .client import SmartcarClient
from .tokens import Account, TokenStore

__all__ = ["RECONNECT_MESSAGE", "TokenManager"]

log = logging.getLogger(__name__)

RECONNECT_MESSAGE = "reconnect with locktwin smartcar connect"

RefusalHook = Callable[[str], Awaitable[None]]


class TokenManager:
    """One :class:`~twin.http.TokenRefresher` per linked user, over the token store (which
    ``locktwin smartcar connect`` may write while the bridge runs, so it is read on every call).

    ``clock``: wall-clock seconds, the store's (tests pass their own).
    """

    def __init__(
        self,
        *,
        client: SmartcarClient,
        store: TokenStore,
        refresh_margin: float,
        on_refused: RefusalHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._store = store
        self._refresh_margin = refresh_margin
        self._on_refused = on_refused
        self._clock = clock
        self._refreshers: dict[str, TokenRefresher[str]] = {}
        self.refreshes = 0

    async def access_token(self, user_id: str, *, stale: str | None = None) -> str:
        """A valid access token of ``user_id``; ``stale`` is one Smartcar just refused (refresh it)."""
        refresher = self._refreshers.get(user_id)
        if refresher is None:
            refresher = self._refreshers[user_id] = TokenRefresher(
                fetch=functools.partial(self._refresh, user_id),
                vendor="smartcar",
                current=functools.partial(self._stored, user_id),
                clock=self._clock,
            )
        return await refresher.get(refused=stale)

    def _account(self, user_id: str) -> Account:
        """The linked account, as stored now; a missing or refused one cannot be used."""
        account = self._store.account(user_id)
        if account is None:
            raise VendorError(ErrorCode.AUTH_FAILED, f"no linked Smartcar account; {RECONNECT_MESSAGE}")
        if account.refused:
            raise VendorError(ErrorCode.AUTH_FAILED, f"Smartcar refused the token; {RECONNECT_MESSAGE}")
        return account

    def _stored(self, user_id: str) -> Token[str]:
        return self._token(self._account(user_id))

    def _token(self, account: Account) -> Token[str]:
        expires = account.access_expires_at
        return Token(account.access_token, expires_at=expires, refresh_at=expires - self._refresh_margin)

    async def _refresh(self, user_id: str, current: Token[str] | None) -> Token[str]:
        account = self._account(user_id)  # its refresh token, as stored
        try:
            tokens = await self._client.refresh(account.refresh_token)
        except VendorError as exc:
            if exc.info.code is ErrorCode.AUTH_FAILED:
                raise await self.refused(user_id, "refresh token", exc) from None
            raise
        # durable before use: the old refresh token is about to stop working
        saved = self._store.save_tokens(user_id, tokens, now=self._clock())
        self.refreshes += 1
        log.info("smartcar: refreshed the access token of user %s", user_id)
        return self._token(saved)

    async def refuse(self, user_id: str) -> None:
        """Smartcar will not take this account's tokens any more."""
        self._store.mark_refused(user_id)
        log.warning("smartcar: tokens of user %s refused; %s", user_id, RECONNECT_MESSAGE)
        if self._on_refused is not None:
            await self._on_refused(user_id)

    async def refused(self, user_id: str, what: str, error: VendorError) -> VendorError:
        """Smartcar refused the account's ``what`` (its refresh or access token): the account is
        marked refused (:meth:`refuse`); returns the error to raise, which says how to link it again."""
        await self.refuse(user_id)
        return VendorError(
            ErrorCode.AUTH_FAILED,
            f"Smartcar refused the {what}; {RECONNECT_MESSAGE}",
            vendor_code=error.info.vendor_code,
            vendor_message=error.info.vendor_message,
        )
