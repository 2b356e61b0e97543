"""The Segway push intake serving HTTPS itself (``push_cert_file``, ``push_key_file``...).

A signed push over HTTPS is stored like one over HTTP; a client that does not trust the CA is
refused in the handshake, a plain-HTTP request to the HTTPS port gets nothing stored; an encrypted
key takes its passphrase from ``LOCKTWIN_SEGWAY_PUSH_KEY_PASSWORD``, and one without it is refused
at start in one line (never a passphrase prompt on the terminal).
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from bridges.segway.intake import PushIntake
from bridges.segway.push import push_signature
from bridges.segway.settings import SegwaySettings
from bridges.segway.tests.conftest import CLIENT_ID, DEVICES, SECRET
from tests.transport.conftest import PASSPHRASE, Pki
from twin.config import load_vendor_settings
from twin.testing_fakes import RecordingSink
from twin.tlsfiles import TlsSettingsError

pytestmark = pytest.mark.anyio

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def signed_status(device: str) -> str:
    # dated now: a push older than the intake's window is ignored (a captured one replayed later)
    fields = {
        "iotCode": device,
        "platformCode": CLIENT_ID,
        "online": "true",
        "locked": "false",
        "statusUtcTime": str(int(time.time())),
    }
    return urlencode({**fields, "signature": push_signature(fields, SECRET)})


def settings(**tls: object) -> SegwaySettings:
    return SegwaySettings(
        client_id=CLIENT_ID,
        client_secret=SECRET,  # type: ignore[arg-type]
        base_url="http://127.0.0.1:9",
        devices=DEVICES,
        poll_interval=None,
        push_enabled=True,
        **tls,  # type: ignore[arg-type]
    )


async def test_push_over_https_is_stored(pki: Pki) -> None:
    sink = RecordingSink(devices=set(DEVICES))
    intake = PushIntake(settings=settings(push_cert_file=pki.server.cert, push_key_file=pki.server.key))
    async with intake.serving(sink) as address:
        url = address.url
        assert url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=pki.ca.cert_file)
        async with httpx.AsyncClient(base_url=url, verify=trusted) as http:
            answer = await http.post("/v2/vehicle/status", content=signed_status(DEVICES[0]), headers=FORM)
        assert answer.status_code == 200 and answer.json()["code"] == 0
        assert intake.stats.stored == 1 and sink.state[DEVICES[0]]["lock"] == "UNLOCKED"

        stranger = ssl.create_default_context(cafile=pki.stranger_ca.cert_file)
        async with httpx.AsyncClient(base_url=url, verify=stranger) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.post("/v2/vehicle/status", content=signed_status(DEVICES[1]), headers=FORM)
        plain = url.replace("https://", "http://")
        async with httpx.AsyncClient(base_url=plain) as http:
            with pytest.raises(httpx.HTTPError):
                answer = await http.post("/v2/vehicle/status", content=signed_status(DEVICES[1]), headers=FORM)
                answer.raise_for_status()
        assert intake.stats.stored == 1 and DEVICES[1] not in sink.state


async def test_an_encrypted_key_takes_its_passphrase_from_the_environment(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = {
        "client_id": CLIENT_ID,
        "base_url": "http://127.0.0.1:9",
        "devices": DEVICES,
        "poll_interval": None,
        "push_enabled": True,
        "push_cert_file": str(pki.bridge_encrypted.cert),
        "push_key_file": str(pki.bridge_encrypted.key),
    }
    monkeypatch.setenv("LOCKTWIN_SEGWAY_CLIENT_SECRET", SECRET)
    without = load_vendor_settings(SegwaySettings, table)
    assert isinstance(without, SegwaySettings)
    with pytest.raises(TlsSettingsError, match="is encrypted: set LOCKTWIN_SEGWAY_PUSH_KEY_PASSWORD") as refused:
        async with PushIntake(settings=without).serving(RecordingSink(devices=set(DEVICES))):
            pass
    assert "\n" not in str(refused.value)

    monkeypatch.setenv("LOCKTWIN_SEGWAY_PUSH_KEY_PASSWORD", PASSPHRASE)
    configured = load_vendor_settings(SegwaySettings, table)
    assert isinstance(configured, SegwaySettings) and PASSPHRASE not in repr(configured)
    intake = PushIntake(settings=configured)
    async with intake.serving(RecordingSink(devices=set(DEVICES))) as address:
        assert address.scheme == "https"


def test_push_tls_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="push_key_file needs push_cert_file"):
        settings(push_key_file=tmp_path / "k.pem")
