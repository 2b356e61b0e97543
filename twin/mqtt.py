"""MQTT clients for every locktwin process, built in one place from :class:`~twin.config.MqttSettings`.

Bridges, the CLI, the demo, the health check, the test harness and any other service (a fleet
service, a web console) get their client here, so the broker's address, credentials, protocol, TLS
and socket options are the same everywhere and come from the same settings
(``[mqtt]`` in the TOML file, ``LOCKTWIN_MQTT__*`` in the environment)::

    from twin.mqtt import describe_error, mqtt_client

    try:
        async with mqtt_client(settings.mqtt, identifier="locktwin-console-1") as client:
            await client.subscribe("locktwin/+/+/state", qos=1)
            async for message in client.messages:
                ...
    except aiomqtt.MqttError as exc:
        log.warning("%s", describe_error(exc, settings.mqtt))   # one line, no traceback

What every client gets:

- the protocol of ``mqtt.protocol`` (MQTT 5 unless ``"3.1.1"``), username and password;
- over ``mqtts://``: a TLS context from :meth:`MqttSettings.ssl_context` (the CA of ``ca_file`` or
  the system's trust store, the broker's name checked against the URL's host, the client
  certificate of ``cert_file``/``key_file``), made anew for each client so that a certificate
  renewed on disk is used from the next connection; ``tls_insecure`` logs a warning each time;
- TCP_NODELAY (a QoS 1 round trip otherwise waits ~40-90 ms on Nagle meeting delayed ACKs);
- ``persistent_session=True``: the broker keeps the subscriptions and queues QoS 1 messages while
  the client is away (MQTT 5: Clean Start off and a Session Expiry of ``mqtt.session_expiry``;
  3.1.1: Clean Session off). Give such a client a stable ``identifier``;
- a connect that fails as soon as the broker closes the connection before its CONNACK (a TLS 1.3
  alert such as "certificate required" arrives only then), instead of aiomqtt's 10 s timeout.

Errors are aiomqtt's (:class:`aiomqtt.MqttError` and subclasses), plus
:class:`~twin.config.TlsSettingsError` (a ``ValueError``) when a TLS file cannot be used.
:func:`describe_error` turns any of them into one line that names what is wrong and the setting to
look at, without key material. Reconnecting stays the caller's job (aiomqtt raises, it does not loop).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import aiomqtt
import anyio
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from twin.config import MqttSettings, TlsSettingsError

__all__ = [
    "BrokerClosedConnection",
    "SocketOption",
    "UnsupportedTopicError",
    "check_topic_levels",
    "describe_error",
    "disconnect_shielded",
    "mqtt_client",
]

log = logging.getLogger(__name__)

#: (level, option, value) for ``socket.setsockopt``, as aiomqtt takes them
SocketOption = tuple[int, int, int | bytes] | tuple[int, int, None, int]
NODELAY: SocketOption = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
#: what NATS's MQTT listener refuses in a topic (2.9.10: it drops the connection)
_NOT_IN_TOPICS = "."
_SOCKET_ERROR = "failed to receive on socket: "


class BrokerClosedConnection(aiomqtt.MqttError):
    """The broker closed the connection before it accepted it (no CONNACK).

    ``reason`` is what the socket said, when it said anything: with TLS 1.3 a broker's refusal of
    the client certificate (``TLSV13_ALERT_CERTIFICATE_REQUIRED``, ``UNKNOWN_CA``...) arrives as an
    alert after the handshake, on the first read.
    """

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason or "the broker closed the connection before accepting it")
        self.reason = reason


class UnsupportedTopicError(ValueError):
    """Topics the broker cannot carry (``mqtt.dots_in_topics`` false and a name with a ``.``)."""


class _SocketErrors(logging.LoggerAdapter[logging.Logger]):
    """The client's logger: keeps paho's last socket error, which is the only place it is told.

    Before the CONNACK the error is reported by :class:`BrokerClosedConnection` (one line, where
    the caller logs it), so paho's own line goes to debug then.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self.last: str | None = None
        self.connecting = True

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(msg, str) and msg.startswith(_SOCKET_ERROR):
            self.last = (msg % args if args else msg).removeprefix(_SOCKET_ERROR)
            if self.connecting:
                level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


class _Client(aiomqtt.Client):
    """aiomqtt's client whose connect fails at once when the broker closes before its CONNACK."""

    def __init__(self, *args: Any, socket_errors: _SocketErrors, **kwargs: Any) -> None:
        super().__init__(*args, logger=cast(logging.Logger, socket_errors), **kwargs)
        self._socket_errors = socket_errors

    async def __aenter__(self) -> _Client:
        self._socket_errors.connecting = True
        await super().__aenter__()
        self._socket_errors.connecting = False
        return self

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if not self._connected.done():
            # aiomqtt ignores a disconnect before the CONNACK and lets the connect time out.
            self._loop.call_soon_threadsafe(self._refused)
            return
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def _refused(self) -> None:
        if not self._connected.done():
            self._connected.set_exception(BrokerClosedConnection(self._socket_errors.last))


def mqtt_client(
    settings: MqttSettings,
    *,
    identifier: str,
    will: aiomqtt.Will | None = None,
    persistent_session: bool = False,
    socket_options: Sequence[SocketOption] = (),
    max_queued_incoming: int = 0,
) -> aiomqtt.Client:
    """A client for the broker of ``settings`` (not connected yet: ``async with`` it).

    ``identifier`` is the MQTT client id (unique per connection at the broker; stable across
    restarts for a ``persistent_session``). ``will`` is published by the broker when the
    connection dies. ``socket_options`` come on top of TCP_NODELAY; ``max_queued_incoming`` bounds
    the messages received and not read yet (0: no bound). Must be called inside the
    running event loop (aiomqtt's rule). Raises :class:`~twin.config.TlsSettingsError` when a TLS
    file cannot be used.
    """
    context = settings.ssl_context()
    if settings.tls_insecure:
        log.warning(
            "mqtt.tls_insecure is on: the certificate and name of %s are NOT verified, so anyone on the "
            "network path can pose as the broker and read or send lock commands",
            settings.url,
        )
    session: dict[str, Any]
    if settings.protocol == "5":
        session = {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": not persistent_session}
        if persistent_session:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = settings.session_expiry
            session["properties"] = props
    else:
        session = {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": not persistent_session}
    return _Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.secret(),
        identifier=identifier,
        will=will,
        keepalive=settings.keepalive,
        tls_context=context,
        socket_options=[NODELAY, *socket_options],
        socket_errors=_SocketErrors(logging.getLogger("mqtt")),
        max_queued_incoming_messages=max_queued_incoming,
        **session,
    )


def check_topic_levels(settings: MqttSettings, names: Mapping[str, Iterable[str]]) -> None:
    """Refuse names the broker cannot carry in a topic, before anything is published.

    ``names`` maps what they are ("device ids", "actions", "base topic") to the names. With
    ``mqtt.dots_in_topics`` false (NATS 2.9.10 drops the connection on a publish to a topic with a
    ``.``: a bridge would reconnect for ever) a name containing one raises
    :class:`UnsupportedTopicError` listing them all.
    """
    if settings.dots_in_topics:
        return
    problems = []
    for kind, values in names.items():
        bad = sorted({v for v in values if any(c in v for c in _NOT_IN_TOPICS)})
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            problems.append(f"{kind} {shown}")
    if problems:
        raise UnsupportedTopicError(
            f"the broker of {settings.url} cannot carry '.' in a topic (mqtt.dots_in_topics is false): "
            f"{'; '.join(problems)}. Serve them through a broker that can (see the broker matrix in README.md)"
        )


# -- errors in one line ------------------------------------------------------------------------

#: OpenSSL's verify codes of a server certificate the client refused
_EXPIRED, _NOT_YET_VALID = 10, 9
_NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_UNTRUSTED = {2, 18, 19, 20, 21, 27}  # no issuer here, self-signed leaf or chain, not trusted


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe_error(exc: BaseException, settings: MqttSettings) -> str:
    """One line saying why a connection to the broker failed, naming the setting to look at."""
    where = f"MQTT {settings.url}"
    for cause in _causes(exc):
        if isinstance(cause, TlsSettingsError):
            return f"{where}: {cause}"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"{where}: {_server_certificate(cause, settings)}"
        if isinstance(cause, BrokerClosedConnection):
            return f"{where}: {_closed(cause, settings)}"
        if isinstance(cause, ssl.SSLError):
            if cause.reason == "WRONG_VERSION_NUMBER":
                return f"{where}: TLS: {settings.host}:{settings.port} does not speak TLS (a plain mqtt:// listener?)"
            return f"{where}: TLS: {cause.reason or cause}"
        if isinstance(cause, ConnectionRefusedError):
            return f"{where}: nothing listens on {settings.host}:{settings.port}"
        if isinstance(cause, ConnectionResetError):
            if settings.tls:
                return f"{where}: TLS: the broker reset the connection in the handshake (a plain mqtt:// listener?)"
            return f"{where}: the broker reset the connection (a TLS listener? then use mqtts://)"
        if isinstance(cause, socket.gaierror):
            return f"{where}: cannot resolve {settings.host} ({cause.strerror})"
        if isinstance(cause, MqttConnectError):
            return f"{where}: the broker refused the connection: {_connack(cause, settings)}"
    text = str(exc) or type(exc).__name__
    return f"{where}: {text.splitlines()[0] if text else type(exc).__name__}"


def _server_certificate(exc: ssl.SSLCertVerificationError, settings: MqttSettings) -> str:
    subject = f"the broker's certificate ({settings.host}:{settings.port})"
    store = f"mqtt.ca_file {settings.ca_file}" if settings.ca_file else "the system's trust store (mqtt.ca_file unset)"
    if exc.verify_code == _EXPIRED:
        return f"TLS: {subject} has expired"
    if exc.verify_code == _NOT_YET_VALID:
        return f"TLS: {subject} is not valid yet (is this machine's clock right?)"
    if exc.verify_code in _NAME_MISMATCH:
        return f"TLS: {subject} is not valid for the name {settings.host} (the host of mqtt.url)"
    if exc.verify_code in _UNTRUSTED:
        return f"TLS: {subject} is not signed by a CA in {store}"
    return f"TLS: {subject} was refused: {exc.verify_message}"


def _closed(exc: BrokerClosedConnection, settings: MqttSettings) -> str:
    reason = (exc.reason or "").upper()
    if "CERTIFICATE_REQUIRED" in reason or ("HANDSHAKE_FAILURE" in reason and settings.cert_file is None):
        if settings.cert_file is None:
            return "TLS: the broker requires a client certificate: set mqtt.cert_file and mqtt.key_file"
        return f"TLS: the broker did not get our client certificate (mqtt.cert_file {settings.cert_file})"
    for alert, problem in (
        ("UNKNOWN_CA", "not signed by a CA it trusts"),
        ("CERTIFICATE_EXPIRED", "expired"),
        ("CERTIFICATE_REVOKED", "revoked"),
        ("BAD_CERTIFICATE", "refused"),
        ("UNSUPPORTED_CERTIFICATE", "not for client authentication"),
    ):
        if alert in reason:
            return f"TLS: the broker refused our client certificate (mqtt.cert_file {settings.cert_file}): {problem}"
    if not settings.tls and "RESET" in reason:
        return "the broker reset the connection (a TLS listener? then use mqtts://)"
    if exc.reason:
        return f"the broker closed the connection before accepting it: {exc.reason}"
    if settings.protocol == "5":
        return "the broker closed the connection before accepting it (a broker without MQTT 5? set mqtt.protocol)"
    return "the broker closed the connection before accepting it"


def _connack(exc: MqttConnectError, settings: MqttSettings) -> str:
    rc = exc.rc
    text = str(rc) if isinstance(rc, ReasonCode) else str(exc).removeprefix(f"[code:{rc}] ")
    lowered = text.lower()
    if "protocol" in lowered and settings.protocol == "5":
        return f'{text} (a broker without MQTT 5: set mqtt.protocol = "3.1.1")'
    if "username" in lowered or "password" in lowered or "authori" in lowered:
        return f"{text} (check mqtt.username and the password; the broker's ACL)"
    return text


@asynccontextmanager
async def disconnect_shielded(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Client]:
    """``async with client``, whose goodbye (DISCONNECT, and waiting for the broker to close) runs even
    when the bridge is being cancelled: aiomqtt's exit awaits it, and a cancelled wait left the
    disconnection's outcome to a future nobody read ("Future exception was never retrieved")."""
    await client.__aenter__()
    try:
        yield client
    finally:
        with anyio.move_on_after(2, shield=True):
            await client.__aexit__(None, None, None)
        # A connection the broker dropped while we were stopping (it stopped first: ``docker compose
        # down``, Ctrl-C in a terminal) leaves its error in aiomqtt's future, which nobody else reads.
        lost = getattr(client, "_disconnected", None)
        if isinstance(lost, asyncio.Future) and lost.done() and not lost.cancelled():
            lost.exception()
