"""The simulated Smartcar authorization server: codes, access tokens, rotating refresh tokens."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

__all__ = ["ALL_SCOPES", "Grant", "OAuthServer", "TokenError"]

ALL_SCOPES = frozenset(
    {"read_vehicle_info", "read_security", "control_security", "read_battery", "read_location", "read_odometer"}
)


@dataclass(frozen=True)
class Grant:
    user_id: str
    scope: frozenset[str]


@dataclass
class _Refresh:
    grant: Grant
    expires_at: float
    used_at: float | None = None


@dataclass
class _Access:
    grant: Grant
    expires_at: float


class TokenError(Exception):
    """An OAuth error answer: ``{"error": ..., "error_description": ...}`` with a status."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


class OAuthServer:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str | None,
        access_token_lifetime: float = 7200.0,
        refresh_token_lifetime: float = 60 * 86400.0,
        refresh_grace: float = 0.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.access_token_lifetime = access_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        #: seconds a used refresh token keeps working (Smartcar: "shortly after use")
        self.refresh_grace = refresh_grace
        self._codes: dict[str, tuple[Grant, str | None]] = {}
        self._access: dict[str, _Access] = {}
        self._refresh: dict[str, _Refresh] = {}
        self.refresh_count = 0

    def issue_code(self, user_id: str, *, scope: frozenset[str] = ALL_SCOPES, redirect_uri: str | None = None) -> str:
        code = secrets.token_urlsafe(16)
        self._codes[code] = (Grant(user_id=user_id, scope=scope), redirect_uri or self.redirect_uri)
        return code

    def issue_tokens(self, grant: Grant, *, now: float | None = None) -> dict[str, object]:
        now = time.time() if now is None else now
        access = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        self._access[access] = _Access(grant=grant, expires_at=now + self.access_token_lifetime)
        self._refresh[refresh] = _Refresh(grant=grant, expires_at=now + self.refresh_token_lifetime)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": max(1, round(self.access_token_lifetime)),
            "refresh_token": refresh,
        }

    def check_client(self, client_id: str | None, client_secret: str | None) -> None:
        if client_id != self.client_id or not secrets.compare_digest(client_secret or "", self.client_secret):
            raise TokenError(401, "invalid_client", "Invalid client credentials.")

    def exchange(self, form: dict[str, str]) -> dict[str, object]:
        """The token endpoint after client authentication."""
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            entry = self._codes.pop(form.get("code", ""), None)
            if entry is None:
                raise TokenError(400, "invalid_grant", "Invalid or expired authorization code.")
            grant, redirect_uri = entry
            if redirect_uri is not None and form.get("redirect_uri", redirect_uri) != redirect_uri:
                raise TokenError(400, "invalid_grant", "redirect_uri does not match the authorization request.")
            return self.issue_tokens(grant)
        if grant_type == "refresh_token":
            now = time.time()
            record = self._refresh.get(form.get("refresh_token", ""))
            if record is None or record.expires_at <= now:
                raise TokenError(400, "invalid_grant", "Invalid or expired refresh token.")
            if record.used_at is not None and now - record.used_at > self.refresh_grace:
                raise TokenError(400, "invalid_grant", "Refresh token has already been used.")
            if record.used_at is None:
                record.used_at = now
            self.refresh_count += 1
            return self.issue_tokens(record.grant, now=now)
        raise TokenError(400, "unsupported_grant_type", f"Unsupported grant_type {grant_type!r}.")

    def grant_of(self, access_token: str) -> Grant | None:
        record = self._access.get(access_token)
        if record is None or record.expires_at <= time.time():
            return None
        return record.grant

    def expire_access_tokens(self, user_id: str | None = None) -> None:
        """Make current access tokens expired (a test of refresh-on-401)."""
        for record in self._access.values():
            if user_id is None or record.grant.user_id == user_id:
                record.expires_at = 0.0

    def revoke(self, user_id: str) -> None:
        """The user removed the application's access: every token stops working."""
        self._access = {k: v for k, v in self._access.items() if v.grant.user_id != user_id}
        self._refresh = {k: v for k, v in self._refresh.items() if v.grant.user_id != user_id}
