"""Configuration: a TOML file plus ``LOCKTWIN_*`` environment variables (the environment wins).

Secrets (the MQTT password, vendor client secrets) come only from the environment or from a file
named by a ``*_file`` setting; a secret written into the TOML file is refused at load time, and
secrets are :class:`~pydantic.SecretStr` so they never print.

Example::

    base_topic = "locktwin"
    data_dir = "/var/lib/locktwin"

    [mqtt]
    url = "mqtts://broker.example"    # TLS, port 8883 unless given; mqtt://host:1883 in clear
    username = "bridge-{vendor}"      # each bridge its own; password: LOCKTWIN_MQTT__PASSWORD or password_file
    ca_file = "/etc/locktwin/ca.crt"  # the broker's CA (default: the system's trust store)
    cert_file = "/etc/locktwin/bridge.crt"  # client certificate, for brokers that require one
    key_file = "/etc/locktwin/bridge.key"   # its passphrase: LOCKTWIN_MQTT__KEY_PASSWORD or key_password_file

    [bridges.segway]
    hold = ["SN0001"]              # devices that are kept LOCKED
    max_in_flight = 512            # vendor calls at once at most; the limit is learned below it
    budget = { calls = 50000, per = "month" }   # vendor requests per period (none by default)

    [vendors.segway]               # the adapter's own settings
    platform_code = "E123"

    [console]                      # locktwin console: people log in with their own MQTT login
    port = 8080
    tile_url = "https://tiles.example/{z}/{x}/{y}.png"   # optional map tiles
"""

from __future__ import annotations

import ssl
import tomllib
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from twin.console.settings import ConsoleSettings
from twin.fleet.settings import FleetSettings
from twin.homeassistant import HomeAssistantSettings
from twin.ledger import BudgetSettings
from twin.tlsfiles import CertificateFiles, TlsSettingsError, load_ca, load_certificate

__all__ = [
    "BridgeOptions",
    "ClusterSettings",
    "ConfigError",
    "LocktwinSettings",
    "MqttSettings",
    "TlsSettingsError",
    "is_secret_key",
    "load_settings",
    "load_vendor_settings",
]

SECRET_KEYS = ("password", "secret", "token", "sign_key", "signkey", "private_key", "api_key")


#: URL schemes of mqtt.url, and whether they mean TLS
MQTT_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True}
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
#: settings that only mean something over TLS
TLS_FIELDS = ("ca_file", "cert_file", "key_file", "key_password", "key_password_file", "tls_insecure")


class MqttSettings(BaseModel):
    """How every locktwin process reaches the broker: bridges, the CLI, the demo, other services.

    Build clients from it with :func:`twin.mqtt.mqtt_client`, never by hand, so TLS, credentials,
    the protocol and TCP_NODELAY are the same everywhere.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        default="mqtt://127.0.0.1:1883", description="mqtt://host[:1883] in clear, mqtts://host[:8883] over TLS"
    )
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    client_id: str | None = Field(default=None, description="default: locktwin-<vendor>[-shard]")
    keepalive: int = Field(default=30, ge=5, le=3600)
    session_expiry: int = Field(default=3600, ge=0, description="seconds the broker keeps our queued commands")
    reconnect_max: float = Field(default=30.0, gt=0)
    #: MQTT 3.1.1 for brokers without v5 (NATS, the demo's embedded broker): retained commands are
    #: then refused only when delivered from the broker's store, and there are no v5 response topics.
    protocol: Literal["5", "3.1.1"] = "5"
    #: False for brokers that refuse a topic containing ``.`` (NATS 2.9.10 drops the connection): a
    #: bridge then refuses at start to serve a device, action or base topic that has one.
    dots_in_topics: bool = True
    ca_file: Path | None = Field(
        default=None, description="PEM file of the CA(s) that signed the broker's certificate; default: system store"
    )
    cert_file: Path | None = Field(default=None, description="PEM client certificate (chain), for mutual TLS")
    key_file: Path | None = Field(default=None, description="PEM private key of cert_file (default: in cert_file)")
    key_password: SecretStr | None = Field(default=None, description="passphrase of key_file; environment only")
    key_password_file: Path | None = None
    tls_insecure: bool = Field(
        default=False, description="accept any server certificate and name: testing only, logged loudly at start"
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in MQTT_SCHEMES or not parts.hostname:
            raise ValueError("mqtt.url must look like mqtt://host:1883 or mqtts://host:8883")
        if parts.username or parts.password:
            # a URL gets logged; credentials go to mqtt.username and LOCKTWIN_MQTT__PASSWORD(_FILE)
            raise ValueError("mqtt.url must not carry credentials: use mqtt.username and the password settings")
        return url

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        if not self.tls:
            given = [name for name in TLS_FIELDS if getattr(self, name) not in (None, False)]
            if given:
                raise ValueError(f"mqtt.{given[0]} needs TLS: use an mqtts:// URL")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("mqtt.key_file needs mqtt.cert_file (the client certificate it belongs to)")
        if (self.key_password or self.key_password_file) and self.cert_file is None:
            raise ValueError("mqtt.key_password needs mqtt.cert_file and mqtt.key_file")
        return self

    @property
    def tls(self) -> bool:
        return MQTT_SCHEMES[urlsplit(self.url).scheme]

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (DEFAULT_TLS_PORT if self.tls else DEFAULT_PORT)

    def for_vendor(self, vendor: str) -> MqttSettings:
        """These settings for one vendor's bridge: ``{vendor}`` in ``username`` and ``password_file``
        becomes its name, so one file serves bridges that each have their own broker user
        (``username = "bridge-{vendor}"``, as mosquitto/acl names them)."""
        update: dict[str, Any] = {}
        if self.username and "{vendor}" in self.username:
            update["username"] = self.username.replace("{vendor}", vendor)
        if self.password_file and "{vendor}" in str(self.password_file):
            update["password_file"] = Path(str(self.password_file).replace("{vendor}", vendor))
        return self.model_copy(update=update) if update else self

    def secret(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return None

    def key_secret(self) -> str | None:
        """The client key's passphrase (``key_password``, else the first line of ``key_password_file``)."""
        if self.key_password is not None:
            return self.key_password.get_secret_value()
        if self.key_password_file is not None:
            try:
                return self.key_password_file.read_text().strip()
            except OSError as exc:
                raise TlsSettingsError(
                    f"mqtt.key_password_file {self.key_password_file}: {exc.strerror or exc}"
                ) from None
        return None

    def ssl_context(self) -> ssl.SSLContext | None:
        """A new TLS context for one connection (None for mqtt:// URLs).

        Verifies the broker's certificate against ``ca_file`` alone (or the system's trust store) and its
        name against the URL's host, TLS 1.2 at least, and presents ``cert_file``/``key_file`` when
        set. Files are read anew each call, so a renewed certificate is used from the next
        connection on. Raises :class:`TlsSettingsError` with one line naming what is wrong.
        """
        if not self.tls:
            return None
        # certificate and name checked; only ca_file is trusted when it is given (a private CA
        # must not be topped up with every public one), else the system's store
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca_file is not None:
            load_ca(context, self.ca_file, "mqtt.ca_file")
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if self.cert_file is not None:
            files = CertificateFiles(
                cert_file=self.cert_file,
                key_file=self.key_file,
                passphrase=self.key_secret(),
                cert_setting="mqtt.cert_file",
                key_setting="mqtt.key_file",
                unlock_hint="LOCKTWIN_MQTT__KEY_PASSWORD or mqtt.key_password_file",
            )
            load_certificate(context, files)
        if self.tls_insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class BridgeOptions(BaseModel):
    """Runtime options of one vendor's bridge (not the vendor's own settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hold: list[str] = Field(default_factory=list, description="devices the engine keeps LOCKED")
    default_expiry: float | None = Field(default=None, gt=0)
    max_expiry: float | None = Field(default=None, gt=0)
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        description="vendor calls in flight at most (the adapter's default: 512): the ceiling of the limit the "
        "bridge learns from the vendor's answers (twin.limiter)",
    )
    initial_in_flight: int | None = Field(
        default=None, ge=1, description="where the learned limit starts (the adapter's default: 16, Smartcar 8)"
    )
    min_in_flight: int = Field(default=2, ge=1, description="the learned limit never goes below this")
    budget: BudgetSettings | None = Field(
        default=None,
        description="vendor requests per period of this account (none by default): commands first, status reads "
        "paced to fit, QUOTA_EXHAUSTED once spent (twin.ledger)",
    )
    device_budget: BudgetSettings | None = Field(
        default=None, description="vendor requests per period of each device, for plans that count per vehicle"
    )
    call_timeout: float = Field(default=30.0, gt=0)
    send_margin: float | None = Field(
        default=None,
        ge=0,
        description="seconds a command must have left when its vendor call starts, else it expires unsent "
        "(default: the vendor's)",
    )
    publish_coalesce: float = Field(
        default=0.02,
        ge=0,
        le=5,
        description="seconds a device's retained twin/state may wait to be published with its next changes",
    )
    journal_days: float = Field(
        default=30.0,
        ge=0,
        description="days the audit journal keeps its entries (0: forever); commands are kept, for replays",
    )
    commands_days: float = Field(
        default=30.0,
        ge=0,
        description="days ended commands are kept, so that a replayed transaction is answered from the store "
        "(0: forever); after that the same transaction is a new command",
    )
    max_queued: int = Field(
        default=100, ge=1, description="open commands a device may have; more are refused DEVICE_BUSY (retryable)"
    )
    get_interval: float = Field(
        default=1.0,
        ge=0,
        description="seconds within which /get of one device share the last read instead of calling the vendor",
    )
    max_observation_ahead: float = Field(
        default=300.0,
        gt=0,
        description="seconds a vendor's timestamp may be ahead of our clock; further ahead it counts as received now",
    )
    retry_base: float = Field(default=0.5, gt=0, description="first delay before a retryable command is sent again")
    retry_cap: float = Field(default=30.0, gt=0, description="longest delay between two attempts of a command")


class ClusterSettings(BaseModel):
    """Several instances of a bridge on one PostgreSQL store (``store = "postgresql://..."``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="this instance's name (its topics, its client id); default: the host name",
    )
    partitions: int = Field(default=32, ge=1, le=4096, description="fixed once a store has data")
    lease_seconds: float = Field(
        default=10.0, ge=2, le=300, description="how long a lease outlives its last renewal (a pause, a split)"
    )


class LocktwinSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOCKTWIN_", env_nested_delimiter="__", extra="forbid", frozen=True)

    base_topic: str = Field(default="locktwin", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    data_dir: Path = Path("data")
    store_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    #: None: one SQLite file per adapter under data_dir; "postgresql://host/db": a store shared by
    #: several instances of each bridge (twin.cluster)
    store: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    store_password: SecretStr | None = None
    store_password_file: Path | None = None
    cluster: ClusterSettings = ClusterSettings()
    mqtt: MqttSettings = MqttSettings()
    bridges: dict[str, BridgeOptions] = Field(default_factory=dict)
    vendors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    homeassistant: HomeAssistantSettings = HomeAssistantSettings()
    console: ConsoleSettings = ConsoleSettings()
    fleet: FleetSettings = FleetSettings()
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="Prometheus endpoint; None: off")
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which is passed as init values.
        return env_settings, init_settings, file_secret_settings

    def bridge(self, vendor: str) -> BridgeOptions:
        return self.bridges.get(vendor, BridgeOptions())

    @field_validator("store")
    @classmethod
    def _check_store(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).password:
            # a URL gets logged and sits in the TOML; the password goes to LOCKTWIN_STORE_PASSWORD(_FILE)
            raise ValueError("store must not carry a password: use LOCKTWIN_STORE_PASSWORD or store_password_file")
        return url

    def store_secret(self) -> str | None:
        """The PostgreSQL password (``LOCKTWIN_STORE_PASSWORD``, else the first line of ``store_password_file``)."""
        if self.store_password is not None:
            return self.store_password.get_secret_value()
        if self.store_password_file is not None:
            return self.store_password_file.read_text().strip()
        return None


class ConfigError(ValueError):
    """A configuration that cannot be used: one problem a line, each naming the TOML key and the
    environment variable that set it, never the value (it may be a secret)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _explain(exc: ValidationError, *, toml: str, env: str, nested: str | None) -> ConfigError:
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in err["loc"]]
        key = ".".join([toml, *loc] if toml else loc)
        reason = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        if nested is not None:
            variable = env + nested.join(loc).upper()
        elif len(loc) == 1:
            variable = env + loc[0].upper()
        else:  # a key inside a table: set in the environment as the table's JSON
            variable = env + loc[0].upper()
        problems.append(f"{key or 'configuration'} (TOML) or {variable} (environment): {reason}")
    return ConfigError(problems)


def is_secret_key(key: str) -> bool:
    """Whether a setting of this name is a secret (read from the environment or a ``*_file`` only)."""
    lowered = key.lower()
    return any(s in lowered for s in SECRET_KEYS) and not lowered.endswith("_file")


def _refuse_secrets(doc: Any, path: str = "") -> None:
    if isinstance(doc, dict):
        for key, value in doc.items():
            where = f"{path}.{key}" if path else str(key)
            if is_secret_key(str(key)) and value not in ("", None):
                raise ValueError(
                    f"{where}: secrets are not read from the configuration file; set it in the environment "
                    f"or point {key}_file at a file"
                )
            _refuse_secrets(value, where)


def load_settings(config: Path | None = None, **overrides: Any) -> LocktwinSettings:
    """The settings of a run: ``config`` (a TOML file) under the ``LOCKTWIN_*`` environment; raises
    :class:`ConfigError` naming what is wrong."""
    doc: dict[str, Any] = {}
    if config is not None:
        try:
            with config.open("rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError([f"{config}: no such configuration file"]) from None
        except OSError as exc:
            raise ConfigError([f"{config}: cannot be read ({exc.strerror})"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{config}: not valid TOML ({exc})"]) from None
        try:
            _refuse_secrets(doc)
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None
    doc.update(overrides)
    try:
        return LocktwinSettings(**doc)
    except ValidationError as exc:
        raise _explain(exc, toml="", env="LOCKTWIN_", nested="__") from None


def load_vendor_settings(model: type[BaseModel], table: dict[str, Any]) -> BaseModel:
    """A vendor's settings from its TOML table, overridden by its ``LOCKTWIN_<VENDOR>_*`` variables."""
    if issubclass(model, BaseSettings):

        class _EnvFirst(model):  # type: ignore[valid-type,misc]
            @classmethod
            def settings_customise_sources(
                cls,
                settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                return env_settings, init_settings, file_secret_settings

        _EnvFirst.__name__ = _EnvFirst.__qualname__ = model.__name__
        prefix = str(model.model_config.get("env_prefix") or "")
        vendor = prefix.removeprefix("LOCKTWIN_").strip("_").lower() or model.__name__
        try:
            return _EnvFirst(**table)
        except ValidationError as exc:
            raise _explain(exc, toml=f"vendors.{vendor}", env=prefix, nested=None) from None
    try:
        return model.model_validate(table)
    except ValidationError as exc:
        raise _explain(exc, toml="vendors", env="LOCKTWIN_VENDORS__", nested="__") from None
