"""Fixtures of the transport tests: certificates made in the test and brokers that serve them.

``pki`` makes a CA, a second CA nobody trusts, the broker's certificates (a good one, an expired
one, one for another host) and client certificates (:mod:`tests.transport.certs`), in a folder the
broker's user can read. ``tls_broker`` is one private mosquitto with a TLS listener for each case,
started once for the session: the cases cost a connection each, not a broker.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from tests.transport.certs import Authority, Issued, give_to_broker_user
from twin.broker import MosquittoBroker, free_port

#: the client key's passphrase in these tests: it must never show in a log
PASSPHRASE = "correct horse battery staple 7"


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Authority
    stranger_ca: Authority
    server: Issued
    expired_server: Issued
    other_host_server: Issued
    bridge: Issued
    #: the bridge's certificate with its key encrypted under PASSPHRASE
    bridge_encrypted: Issued
    #: a client certificate from the CA nobody trusts
    stranger: Issued


@pytest.fixture(scope="session")
def pki() -> Iterator[Pki]:
    # not under tmp_path: its parents are private to us, and a root-started mosquitto runs as its own user
    directory = Path(tempfile.mkdtemp(prefix="locktwin-pki-"))
    directory.chmod(0o755)
    ca = Authority(directory)
    stranger_ca = Authority(directory, "stranger CA")
    made = Pki(
        directory=directory,
        ca=ca,
        stranger_ca=stranger_ca,
        server=ca.issue("server", hosts=("localhost", "127.0.0.1")),
        expired_server=ca.issue("expired-server", hosts=("localhost", "127.0.0.1"), expired=True),
        other_host_server=ca.issue("other-host-server", hosts=("broker.example",)),
        bridge=ca.issue("bridge", client=True),
        bridge_encrypted=ca.issue("bridge-encrypted", client=True, password=PASSPHRASE.encode()),
        stranger=stranger_ca.issue("stranger", client=True),
    )
    give_to_broker_user(directory, *directory.iterdir())
    yield made
    shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class TlsBroker:
    """One mosquitto with a TLS listener per case (ports on 127.0.0.1)."""

    broker: MosquittoBroker
    #: the good server certificate
    tls: int
    #: a server certificate that expired yesterday
    expired: int
    #: a server certificate for broker.example only
    other_host: int
    #: the good certificate, and clients must show one signed by the CA
    mutual: int


def _listener(port: int, ca: Path, server: Issued, *, mutual: bool = False) -> str:
    lines = [f"listener {port} 127.0.0.1", f"cafile {ca}", f"certfile {server.cert}", f"keyfile {server.key}"]
    if mutual:
        lines += ["require_certificate true", "use_identity_as_username true"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def tls_broker(pki: Pki) -> Iterator[TlsBroker]:
    tls, expired, other_host, mutual = (free_port() for _ in range(4))
    ca = pki.ca.cert_file
    broker = MosquittoBroker(
        extra_config=_listener(tls, ca, pki.server)
        + _listener(expired, ca, pki.expired_server)
        + _listener(other_host, ca, pki.other_host_server)
        + _listener(mutual, ca, pki.server, mutual=True)
    )
    broker.workdir.chmod(0o755)
    give_to_broker_user(broker.workdir)
    broker.start()
    try:
        yield TlsBroker(broker=broker, tls=tls, expired=expired, other_host=other_host, mutual=mutual)
    finally:
        broker.stop()
        shutil.rmtree(broker.workdir, ignore_errors=True)


class LogLines(logging.Handler):
    """Every record of the loggers it is attached to, with an event to wait on."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()
        self._changed = anyio.Event()

    def lines(self, logger: str, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.name == logger and r.levelno >= level]

    async def wait_lines(
        self, logger: str, count: int, *, level: int = logging.WARNING, timeout: float = 15
    ) -> list[str]:
        with anyio.fail_after(timeout):
            while len(found := self.lines(logger, level)) < count:
                await self._changed.wait()
        return found


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Records of every logger (root at DEBUG while the test runs)."""
    handler = LogLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
