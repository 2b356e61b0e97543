"""A cheaper decoding of the PUBACKs paho reads on an MQTT 5 connection.

paho builds a new ``ReasonCode`` and a new, empty ``Properties`` for every PUBACK, ~10 us of CPU each
(``Properties.__init__`` fills a table of every property name). A bridge reads a PUBACK for every
QoS 1 message it publishes, several per command and 200,000 for a fleet republish; almost all of
them are 2 or 3 bytes: a packet id and at most a reason code, no properties. :func:`install`
replaces paho's ``_packet.decode_puback`` (paho's client calls it through the module) by one that
answers those from shared instances, one per reason code, and hands anything longer, anything
on MQTT 3.1.1 and any code it does not know to paho's own. Measured with ``bench/latency.py``:
~0.1 ms of CPU less per ``/set``.

The shared instances reach only PUBACK callbacks: aiomqtt's (it reads the packet id) and
:class:`twin.publisher.Publisher`'s (it reads ``is_failure``); neither keeps or changes them. Both
private names are checked, so a paho release that moves them leaves paho's decoding in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["install"]

log = logging.getLogger(__name__)

_Decode = Callable[[int, bytes | bytearray, MQTTProtocolVersion], _packet.PubackPacket]


def _shortcut(paho_decode: _Decode) -> _Decode:
    shared: dict[int, tuple[ReasonCode, Properties]] = {}

    def decode_puback(header: int, packet: bytes | bytearray, protocol: MQTTProtocolVersion) -> _packet.PubackPacket:
        size = len(packet)
        if protocol != MQTTProtocolVersion.MQTTv5 or not 2 <= size <= 3:
            return paho_decode(header, packet, protocol)
        code = packet[2] if size == 3 else 0
        parts = shared.get(code)
        if parts is None:
            try:
                reason = ReasonCode(PacketTypes.PUBACK, identifier=code)
            except Exception:  # not a PUBACK reason code: paho says what is wrong with it
                return paho_decode(header, packet, protocol)
            parts = shared[code] = (reason, Properties(PacketTypes.PUBACK))  # type: ignore[no-untyped-call]
        return _packet.PubackPacket(mid=(packet[0] << 8) | packet[1], reason=parts[0], properties=parts[1])

    decode_puback.paho_decode = paho_decode  # type: ignore[attr-defined]
    return decode_puback


def install() -> bool:
    """Use the shortcut in this process (idempotent); False if this paho release does not allow it."""
    current = getattr(_packet, "decode_puback", None)
    if current is None or not hasattr(_packet, "PubackPacket"):
        log.info("paho has no _packet.decode_puback: PUBACKs are decoded by paho itself")
        return False
    if not hasattr(current, "paho_decode"):
        _packet.decode_puback = _shortcut(current)  # type: ignore[assignment]
    return True
