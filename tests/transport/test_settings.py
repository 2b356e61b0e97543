"""The TLS settings of ``[mqtt]``: URLs, validation, the TLS context and its one-line errors (no broker)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from tests.transport.conftest import PASSPHRASE, Pki
from twin.config import MqttSettings, TlsSettingsError, load_settings
from twin.mqtt import UnsupportedTopicError, check_topic_levels


def test_mqtts_urls_default_to_port_8883() -> None:
    assert (MqttSettings(url="mqtts://broker.example").port, MqttSettings(url="mqtts://b:9883").port) == (8883, 9883)
    assert MqttSettings(url="mqtt://broker.example").port == 1883
    assert MqttSettings(url="mqtts://broker.example").tls and not MqttSettings(url="tcp://b").tls
    assert MqttSettings().ssl_context() is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"url": "mqtt://b", "ca_file": "ca.crt"}, "mqtt.ca_file needs TLS: use an mqtts:// URL"),
        ({"url": "mqtt://b", "tls_insecure": True}, "mqtt.tls_insecure needs TLS"),
        ({"url": "mqtts://b", "key_file": "k.pem"}, "mqtt.key_file needs mqtt.cert_file"),
        ({"url": "mqtts://b", "key_password": "x"}, "mqtt.key_password needs mqtt.cert_file"),
        ({"url": "wss://b"}, "mqtt.url must look like"),
    ],
)
def test_settings_that_cannot_work_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MqttSettings(**values)  # type: ignore[arg-type]


def test_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "URL": "mqtts://broker.example",
        "CA_FILE": "/etc/locktwin/ca.crt",
        "CERT_FILE": "/etc/locktwin/bridge.crt",
        "KEY_FILE": "/etc/locktwin/bridge.key",
        "KEY_PASSWORD": PASSPHRASE,
        "TLS_INSECURE": "false",
    }.items():
        monkeypatch.setenv(f"LOCKTWIN_MQTT__{name}", value)
    mqtt = load_settings(None).mqtt
    assert (mqtt.ca_file, mqtt.cert_file, mqtt.key_file) == tuple(
        Path(f"/etc/locktwin/{n}") for n in ("ca.crt", "bridge.crt", "bridge.key")
    )
    assert mqtt.key_secret() == PASSPHRASE and PASSPHRASE not in repr(mqtt)


def test_the_passphrase_is_refused_in_the_configuration_file(tmp_path: Path) -> None:
    config = tmp_path / "locktwin.toml"
    config.write_text('[mqtt]\nurl = "mqtts://b"\ncert_file = "c"\nkey_file = "k"\nkey_password = "hunter2"\n')
    with pytest.raises(ValueError, match=r"mqtt\.key_password: secrets are not read from the configuration file"):
        load_settings(config)
    config.write_text('[mqtt]\nurl = "mqtts://b"\ncert_file = "c"\nkey_file = "k"\nkey_password_file = "/run/p"\n')
    assert load_settings(config).mqtt.key_password_file == Path("/run/p")


def test_the_context_verifies_the_broker(pki: Pki) -> None:
    context = MqttSettings(url="mqtts://b", ca_file=pki.ca.cert_file).ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("organizationName", "locktwin tests"),), (("commonName", "locktwin test CA"),))
    ]
    # only ca_file is trusted then; without it, the system's trust store
    system = MqttSettings(url="mqtts://b").ssl_context()
    assert system is not None and system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    assert len(system.get_ca_certs()) == len(ssl.create_default_context().get_ca_certs())
    insecure = MqttSettings(url="mqtts://b", tls_insecure=True).ssl_context()
    assert insecure is not None and insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname


def test_tls_files_that_cannot_be_used_are_one_line(pki: Pki, tmp_path: Path) -> None:
    encrypted, plain = pki.bridge_encrypted, pki.bridge
    cases = {
        "is encrypted: set LOCKTWIN_MQTT__KEY_PASSWORD or mqtt.key_password_file": {
            "cert_file": encrypted.cert,
            "key_file": encrypted.key,
        },
        "wrong passphrase": {"cert_file": encrypted.cert, "key_file": encrypted.key, "key_password": SecretStr("no")},
        f"is not the key of mqtt.cert_file {encrypted.cert}": {"cert_file": encrypted.cert, "key_file": plain.key},
        f"mqtt.ca_file {tmp_path / 'missing.crt'}: No such file": {"ca_file": tmp_path / "missing.crt"},
        "no CA certificate in PEM": {"ca_file": plain.key},
        f"mqtt.cert_file {tmp_path / 'gone.crt'}: no such file": {"cert_file": tmp_path / "gone.crt"},
        "no PEM certificate and private key in it (or set mqtt.key_file)": {"cert_file": plain.cert},
        f"mqtt.key_password_file {tmp_path / 'nope'}": {
            "cert_file": encrypted.cert,
            "key_file": encrypted.key,
            "key_password_file": tmp_path / "nope",
        },
    }
    for expected, values in cases.items():
        with pytest.raises(TlsSettingsError) as caught:
            MqttSettings(url="mqtts://b", **values).ssl_context()  # type: ignore[arg-type]
        message = str(caught.value)
        assert expected in message and "\n" not in message and PASSPHRASE not in message, message


def test_names_a_broker_cannot_carry_are_listed() -> None:
    check_topic_levels(MqttSettings(), {"device ids": ["a.b"]})  # mosquitto and most brokers carry '.'
    nats = MqttSettings(protocol="3.1.1", dots_in_topics=False)
    check_topic_levels(nats, {"device ids": ["a-b", "c_d:e"]})
    many = [f"dev.{i}" for i in range(7)]
    with pytest.raises(UnsupportedTopicError) as caught:
        check_topic_levels(nats, {"device ids": ["ok", *many], "actions": ["set.mode"]})
    message = str(caught.value)
    assert "device ids dev.0, dev.1, dev.2, dev.3, dev.4 and 2 more" in message
    assert "actions set.mode" in message and "mqtt.dots_in_topics is false" in message
