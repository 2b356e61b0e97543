"""Certificates and keys read from PEM files, with errors of one line that name the setting.

Shared by the MQTT client settings (``mqtt.cert_file``...) and the HTTPS servers (the Segway push
intake's ``push_cert_file``...). A key that is encrypted and has no passphrase is an error, never a
prompt: OpenSSL's default would ask on the terminal and a service would hang there. Messages name
files and settings, never key material or the passphrase.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertificateFiles", "TlsSettingsError", "load_ca", "load_certificate"]


class TlsSettingsError(ValueError):
    """A TLS file named by the settings cannot be used (missing, not PEM, wrong passphrase).

    Its message is one line naming the setting and the file; never the key or its passphrase.
    """


@dataclass(frozen=True)
class CertificateFiles:
    """A certificate (chain) and its key, as PEM files, and where the settings name them."""

    cert_file: Path
    key_file: Path | None = None
    passphrase: str | None = None
    #: names of the settings, for the messages
    cert_setting: str = "cert_file"
    key_setting: str = "key_file"
    #: where a passphrase comes from, for the message about an encrypted key without one
    unlock_hint: str = "key_password"

    def __repr__(self) -> str:  # never the passphrase
        return f"CertificateFiles(cert_file={self.cert_file!s}, key_file={self.key_file!s})"


def load_certificate(context: ssl.SSLContext, files: CertificateFiles) -> None:
    """``context.load_cert_chain`` for ``files``; raises :class:`TlsSettingsError` in one line."""
    cert_name = f"{files.cert_setting} {files.cert_file}"
    key_name = f"{files.key_setting} {files.key_file}" if files.key_file is not None else cert_name

    def ask() -> str:
        if files.passphrase is None:
            raise TlsSettingsError(f"{key_name} is encrypted: set {files.unlock_hint}")
        return files.passphrase

    for name, path in ((cert_name, files.cert_file), (key_name, files.key_file)):
        if path is not None and not path.is_file():
            raise TlsSettingsError(f"{name}: no such file")
    try:
        context.load_cert_chain(certfile=files.cert_file, keyfile=files.key_file, password=ask)
    except TlsSettingsError:
        raise
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None)
        if reason == "KEY_VALUES_MISMATCH":
            problem = f"{key_name} is not the key of {cert_name}"
        elif files.passphrase is not None and reason in (None, "BAD_DECRYPT", "PEM_LIB"):
            problem = f"{key_name}: wrong passphrase, or not a PEM key"
        elif files.key_file is None:
            problem = f"{cert_name}: no PEM certificate and private key in it (or set {files.key_setting})"
        else:
            problem = f"{cert_name} and {key_name}: not a PEM certificate and its key"
        raise TlsSettingsError(problem) from None


def load_ca(context: ssl.SSLContext, ca_file: Path, setting: str) -> None:
    """``context.load_verify_locations`` for ``ca_file``; raises :class:`TlsSettingsError` in one line."""
    try:
        context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as exc:
        raise TlsSettingsError(f"{setting} {ca_file}: no CA certificate in PEM in it ({exc.reason})") from None
    except OSError as exc:
        raise TlsSettingsError(f"{setting} {ca_file}: {exc.strerror or exc}") from None
