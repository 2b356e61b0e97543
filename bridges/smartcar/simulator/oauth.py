"""The simulated Smartcar authorization server: codes, access tokens, rotating refresh tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["ALL_SCOPES", "Grant", "OAuthServer", "TokenError"]

ALL_SCOPES = frozenset(
    {"read_vehicle_info", "read_security", "control_security", "read_battery", "read_location", "read_odometer"}
)


@dataclass(frozen=True)
class Grant:
    user_id: str
    scope: frozenset[str]


class TokenError(Exception):
    """An OAuth error answer: ``{"error": ..., "error_description": ...}`` with a status."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


class OAuthServer:
    """Tokens are self-contained and signed with the client secret, like Smartcar's opaque ones look
    from outside: a restarted simulator with the same secret still accepts what it issued (the demo
    keeps its linked account across restarts). Used refresh tokens, revocations and early expiry
    are remembered in memory.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str | None,
        access_token_lifetime: float = 7200.0,
        refresh_token_lifetime: float = 60 * 86400.0,
        refresh_grace: float = 0.0,
        demo_code: str | None = None,
        demo_user: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.access_token_lifetime = access_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        #: seconds a used refresh token keeps working (Smartcar: "shortly after use")
        self.refresh_grace = refresh_grace
        #: a code that may be exchanged any number of times (demo and compose setups)
        self.demo_code = demo_code
        self.demo_user = demo_user
        self._codes: dict[str, tuple[Grant, str | None]] = {}
        self._used_refresh: dict[str, float] = {}
        #: tokens of a user issued before this instant are dead (revocation)
        self._revoked_before: dict[str, float] = {}
        #: access tokens of a user ("" for everyone) issued before this instant are expired
        self._access_expired_before: dict[str, float] = {}
        self.refresh_count = 0

    def issue_code(self, user_id: str, *, scope: frozenset[str] = ALL_SCOPES, redirect_uri: str | None = None) -> str:
        code = secrets.token_urlsafe(16)
        self._codes[code] = (Grant(user_id=user_id, scope=scope), redirect_uri or self.redirect_uri)
        return code

    def _sign(self, claims: dict[str, object]) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).decode().rstrip("=")
        mac = hmac.new(self.client_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()[:40]
        return f"{payload}.{mac}"

    def _claims(self, token: str, kind: str) -> dict[str, Any] | None:
        payload, _, mac = token.partition(".")
        expected = hmac.new(self.client_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()[:40]
        if not mac or not hmac.compare_digest(mac, expected):
            return None
        try:
            claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return None
        if claims.get("k") != kind or float(claims["e"]) <= time.time():
            return None
        if float(claims["i"]) < self._revoked_before.get(str(claims["u"]), float("-inf")):
            return None
        return claims

    def issue_tokens(self, grant: Grant, *, now: float | None = None) -> dict[str, object]:
        now = time.time() if now is None else now
        common = {"u": grant.user_id, "s": sorted(grant.scope), "i": now}
        access = self._sign({**common, "k": "a", "e": now + self.access_token_lifetime, "n": secrets.token_hex(6)})
        refresh = self._sign({**common, "k": "r", "e": now + self.refresh_token_lifetime, "n": secrets.token_hex(8)})
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
            code = form.get("code", "")
            if self.demo_code is not None and self.demo_user is not None and code == self.demo_code:
                return self.issue_tokens(Grant(user_id=self.demo_user, scope=ALL_SCOPES))
            entry = self._codes.pop(code, None)
            if entry is None:
                raise TokenError(400, "invalid_grant", "Invalid or expired authorization code.")
            grant, redirect_uri = entry
            if redirect_uri is not None and form.get("redirect_uri", redirect_uri) != redirect_uri:
                raise TokenError(400, "invalid_grant", "redirect_uri does not match the authorization request.")
            return self.issue_tokens(grant)
        if grant_type == "refresh_token":
            now = time.time()
            claims = self._claims(form.get("refresh_token", ""), "r")
            if claims is None:
                raise TokenError(400, "invalid_grant", "Invalid or expired refresh token.")
            nonce = str(claims["n"])
            used_at = self._used_refresh.get(nonce)
            if used_at is not None and now - used_at > self.refresh_grace:
                raise TokenError(400, "invalid_grant", "Refresh token has already been used.")
            self._used_refresh.setdefault(nonce, now)
            self.refresh_count += 1
            return self.issue_tokens(Grant(user_id=str(claims["u"]), scope=frozenset(claims["s"])), now=now)
        raise TokenError(400, "unsupported_grant_type", f"Unsupported grant_type {grant_type!r}.")

    def grant_of(self, access_token: str) -> Grant | None:
        claims = self._claims(access_token, "a")
        if claims is None:
            return None
        user_id = str(claims["u"])
        expired = max(self._access_expired_before.get(k, float("-inf")) for k in (user_id, ""))
        if float(claims["i"]) < expired:
            return None
        return Grant(user_id=user_id, scope=frozenset(claims["s"]))

    def expire_access_tokens(self, user_id: str | None = None) -> None:
        """Make the access tokens issued so far expired (a test of refresh-on-401)."""
        self._access_expired_before[user_id or ""] = time.time() + 1e-6

    def revoke(self, user_id: str) -> None:
        """The user removed the application's access: every token issued so far stops working."""
        self._revoked_before[user_id] = time.time() + 1e-6
