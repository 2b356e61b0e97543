"""Signing: the project's signer against the official tuya-connector-python SDK, byte for byte."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tuya_connector import TuyaOpenAPI
from tuya_connector.openapi import TuyaTokenInfo

from bridges.tuya.signing import canonical_path, content_sha256, sign, string_to_sign

CLIENT_ID = "p9ka4dk3ydx0oqvf2w4c"
SECRET = "2f0f3a3b7e6f4c1a9d8e7f6a5b4c3d2e"

CASES: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = [
    ("GET", "/v1.0/token", {"grant_type": 1}, None),
    ("GET", "/v1.0/token/5a0c1d2e3f", None, None),
    ("GET", "/v1.0/devices/6c47abc/status", None, None),
    (
        "GET",
        "/v1.1/devices/6c47abc/users",
        {"role": "admin", "keyword": "Ann Lee", "page_size": 10, "page_no": 1},
        None,
    ),
    (
        "GET",
        "/v1.0/smart-lock/devices/6c47abc/users",
        {"codes": "unlock_card,unlock_password", "page_no": 1, "page_size": 100},
        None,
    ),
    ("POST", "/v1.0/smart-lock/devices/6c47abc/password-ticket", None, None),
    ("POST", "/v1.0/smart-lock/devices/6c47abc/password-free/door-operate", None, {"ticket_id": "t1", "open": True}),
    (
        "PUT",
        "/v1.0/smart-lock/devices/6c47abc/users/42/schedule",
        None,
        {
            "permanent": False,
            "schedule_details": [{"start_minute": 420, "end_minute": 1438, "working_day": 99}],
            "nick": "Zoë",
        },
    ),
    ("DELETE", "/v1.0/devices/6c47abc/users/42", None, None),
]


def _sdk(with_token: bool) -> TuyaOpenAPI:
    api = TuyaOpenAPI("http://127.0.0.1:9", CLIENT_ID, SECRET)
    if with_token:
        api.token_info = TuyaTokenInfo(
            {"t": 0, "result": {"access_token": "3f4e5d6c7b8a", "refresh_token": "r", "expire_time": 7200}}
        )
    return api


@pytest.mark.parametrize("with_token", [False, True])
@pytest.mark.parametrize(("method", "path", "params", "body"), CASES)
def test_sign_matches_official_sdk(
    method: str, path: str, params: dict[str, Any] | None, body: dict[str, Any] | None, with_token: bool
) -> None:
    api = _sdk(with_token)
    expected, t = api._calculate_sign(method, path, params, body)
    mine = sign(
        client_id=CLIENT_ID,
        secret=SECRET,
        t=str(t),
        method=method,
        path=path,
        params=params,
        body=json.dumps(body).encode() if body else None,
        access_token=api.token_info.access_token if with_token else "",
    )
    assert mine == expected


def test_string_to_sign_layout() -> None:
    text = string_to_sign("get", "/v1.0/x", {"b": 2, "a": "x y"}, None)
    assert text.split("\n") == ["GET", content_sha256(None), "", "/v1.0/x?a=x y&b=2"]


def test_canonical_path_without_params() -> None:
    assert canonical_path("/v1.0/token", {}) == "/v1.0/token"


def test_sign_nonce_changes_signature() -> None:
    base = {"client_id": "c", "secret": "s", "t": "1700000000000", "method": "GET", "path": "/p"}
    assert sign(**base) != sign(**base, nonce="n1")
    assert sign(**base) == sign(**base, nonce="")
