"""The PUBACK shortcut decodes exactly what paho decodes, and leaves what it does not know to paho."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion

from twin import puback

V5, V311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311
PUBACK_HEADER = 0x40


def _view(result: Any) -> tuple[Any, ...]:
    reason = result.reason
    return (result.mid, reason.value, reason.getName(), reason.is_failure, result.properties.json())


def _both(packet: bytes, protocol: MQTTProtocolVersion) -> tuple[Any, Any]:
    assert puback.install()
    shortcut = _packet.decode_puback
    paho_decode = shortcut.paho_decode  # type: ignore[attr-defined]
    return shortcut(PUBACK_HEADER, packet, protocol), paho_decode(PUBACK_HEADER, packet, protocol)


@pytest.mark.parametrize(
    ("packet", "protocol"),
    [
        (b"\x12\x34", V5),  # success, nothing else: the common case
        (b"\x00\x07\x10", V5),  # "no matching subscribers", not a failure
        (b"\xff\xff\x80", V5),  # "unspecified error": a failure
        (b"\x00\x07\x87", V5),  # "not authorized" (an ACL refusal)
        (b"\x00\x07\x10\x05\x1f\x00\x02ok", V5),  # with a reason string property: paho's own decoding
        (b"\x00\x09", V311),
    ],
)
def test_the_shortcut_decodes_what_paho_decodes(packet: bytes, protocol: MQTTProtocolVersion) -> None:
    mine, theirs = _both(packet, protocol)
    assert _view(mine) == _view(theirs)


def test_an_unknown_reason_code_is_left_to_paho() -> None:
    with pytest.raises(Exception) as theirs:
        _both(b"\x00\x07\x05", V5)[1]
    with pytest.raises(type(theirs.value)):
        _packet.decode_puback(PUBACK_HEADER, b"\x00\x07\x05", V5)


def test_installing_twice_wraps_once() -> None:
    assert puback.install()
    first = _packet.decode_puback
    assert puback.install()
    assert _packet.decode_puback is first
    assert not hasattr(first.paho_decode, "paho_decode")  # type: ignore[attr-defined]


def test_the_common_case_shares_its_parts() -> None:
    """The point of the shortcut: no new ReasonCode and Properties per PUBACK."""
    puback.install()
    one = _packet.decode_puback(PUBACK_HEADER, b"\x00\x01", V5)
    two = _packet.decode_puback(PUBACK_HEADER, b"\x00\x02", V5)
    assert (one.mid, two.mid) == (1, 2)
    assert one.reason is two.reason and one.properties is two.properties
