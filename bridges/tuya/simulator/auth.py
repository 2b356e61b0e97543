"""The simulated cloud's authentication: signature checks and tokens as the real cloud does them."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from bridges.tuya.signing import sign

__all__ = ["AuthError", "TokenPair", "TokenStore", "verify_signature"]


class AuthError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass
class TokenPair:
    access_token: str
    refresh_token: str
    expires_at: float  # time.monotonic()
    uid: str


@dataclass
class TokenStore:
    """Access tokens expire after ``lifetime``; each refresh token works exactly once."""

    lifetime: float
    uid: str = "bay1629701943556Gg5x"
    access: dict[str, TokenPair] = field(default_factory=dict)
    refresh: dict[str, TokenPair] = field(default_factory=dict)
    grants: int = 0
    refreshes: int = 0

    def grant(self) -> TokenPair:
        pair = TokenPair(
            access_token=secrets.token_hex(16),
            refresh_token=secrets.token_hex(16),
            expires_at=time.monotonic() + self.lifetime,
            uid=self.uid,
        )
        self.access[pair.access_token] = pair
        self.refresh[pair.refresh_token] = pair
        self.grants += 1
        return pair

    def use_refresh(self, refresh_token: str) -> TokenPair:
        old = self.refresh.pop(refresh_token, None)
        if old is None:
            raise AuthError(1012, "refresh token invalid or already used")
        self.access.pop(old.access_token, None)
        self.refreshes += 1
        self.grants -= 1
        return self.grant()

    def check(self, access_token: str) -> None:
        pair = self.access.get(access_token)
        if pair is None:
            raise AuthError(1011, "token invalid")
        if time.monotonic() >= pair.expires_at:
            raise AuthError(1010, "token invalid")

    def expire_all(self) -> None:
        """Expire every access token now (refresh tokens stay usable)."""
        for pair in self.access.values():
            pair.expires_at = 0.0


def verify_signature(
    *,
    headers: Mapping[str, str],
    client_id: str,
    secret: str,
    method: str,
    path: str,
    params: Mapping[str, str],
    body: bytes,
    token_call: bool,
    max_skew: float,
) -> str:
    """Check one request's ``sign``; returns the access token it was signed with."""
    if headers.get("client_id") != client_id:
        raise AuthError(1005, "clientId is invalid")
    if headers.get("sign_method", "HMAC-SHA256") != "HMAC-SHA256":
        raise AuthError(1004, "sign invalid")
    t = headers.get("t", "")
    if not (t.isdigit() and len(t) == 13):
        raise AuthError(1013, "request time is invalid")
    if abs(time.time() - int(t) / 1000) > max_skew:
        raise AuthError(1013, "request time is invalid")
    access_token = "" if token_call else headers.get("access_token", "")
    given = headers.get("sign", "")
    bodies = [body]
    if body.strip() == b"{}":
        # the official SDK hashes an empty dict as "" yet sends "{}"; the cloud accepts it
        bodies.append(b"")
    for candidate in bodies:
        expected = sign(
            client_id=client_id,
            secret=secret,
            t=t,
            method=method,
            path=path,
            params=params,
            body=candidate,
            access_token=access_token,
            nonce=headers.get("nonce", ""),
        )
        if hmac.compare_digest(expected, given):
            return access_token
    raise AuthError(1004, "sign invalid")
