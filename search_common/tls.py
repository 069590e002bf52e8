"""TLS and mutual TLS for every gRPC hop, from PEM files: one place that loads credentials.

Servers: `--tls-cert` and `--tls-key` turn TLS on; `--tls-client-ca` also requires and verifies a client
certificate signed by that CA (mutual TLS). Clients: `--tls-ca` turns TLS on (the CA that signed the
servers' certificates); `--tls-client-cert` and `--tls-client-key` present a client certificate. Files are
read once at startup; a missing or unreadable file is a `TlsConfigError` naming it.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

logger = logging.getLogger(__name__)


class TlsConfigError(ValueError):
    """The TLS options are incomplete or name a file that cannot be read."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{what} {path} cannot be read ({exc.strerror})") from None


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def from_options(cls, cert: Path | None, key: Path | None, client_ca: Path | None) -> ServerTls | None:
        """None when TLS is off; TlsConfigError when the options do not make a whole."""
        if cert is None and key is None:
            if client_ca is not None:
                raise TlsConfigError("--tls-client-ca needs --tls-cert and --tls-key")
            return None
        if cert is None or key is None:
            raise TlsConfigError("--tls-cert and --tls-key go together")
        return cls(cert, key, client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        chain = _read(self.cert, "--tls-cert")
        key = _read(self.key, "--tls-key")
        client_ca = None if self.client_ca is None else _read(self.client_ca, "--tls-client-ca")
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )


@dataclass(frozen=True, slots=True)
class ClientTls:
    ca: Path
    client_cert: Path | None = None
    client_key: Path | None = None

    @classmethod
    def from_options(
        cls, ca: Path | None, client_cert: Path | None, client_key: Path | None, flags: str = "--tls"
    ) -> ClientTls | None:
        """`flags` is the prefix of the options these came from, so errors name the right ones."""
        if ca is None:
            if client_cert is not None or client_key is not None:
                raise TlsConfigError(f"{flags}-client-cert/{flags}-client-key need {flags}-ca")
            return None
        if (client_cert is None) != (client_key is None):
            raise TlsConfigError(f"{flags}-client-cert and {flags}-client-key go together")
        return cls(ca, client_cert, client_key)

    def credentials(self) -> grpc.ChannelCredentials:
        ca = _read(self.ca, "--tls-ca")
        cert = None if self.client_cert is None else _read(self.client_cert, "--tls-client-cert")
        key = None if self.client_key is None else _read(self.client_key, "--tls-client-key")
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


# argparse's parser and argument groups both take add_argument.
ArgumentContainer = argparse.ArgumentParser | argparse._ArgumentGroup


def add_server_tls_options(parser: ArgumentContainer) -> None:
    """--tls-cert, --tls-key and --tls-client-ca, the same on every server."""
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain; enables TLS")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca", type=Path, default=None, help="PEM CA; clients must show a cert it signed (mTLS)"
    )


def server_tls_from(args: argparse.Namespace) -> ServerTls | None:
    return ServerTls.from_options(args.tls_cert, args.tls_key, args.tls_client_ca)


def add_client_tls_options(parser: ArgumentContainer, flags: str, peer: str) -> None:
    """`{flags}-ca`, `{flags}-client-cert` and `{flags}-client-key` for the channels to `peer`."""
    parser.add_argument(f"{flags}-ca", type=Path, default=None, help=f"PEM CA of {peer}; enables TLS")
    parser.add_argument(f"{flags}-client-cert", type=Path, default=None, help="PEM client certificate (mTLS)")
    parser.add_argument(
        f"{flags}-client-key", type=Path, default=None, help=f"PEM key of {flags}-client-cert"
    )


def client_tls_from(args: argparse.Namespace, flags: str) -> ClientTls | None:
    dest = flags.lstrip("-").replace("-", "_")
    return ClientTls.from_options(
        getattr(args, f"{dest}_ca"),
        getattr(args, f"{dest}_client_cert"),
        getattr(args, f"{dest}_client_key"),
        flags,
    )


def tritonclient_options(tls: ClientTls | None) -> dict[str, Any]:
    """Keyword arguments of tritonclient's gRPC clients (sync and aio), which take PEM paths, not bytes."""
    if tls is None:
        return {}
    return {
        "ssl": True,
        "root_certificates": str(tls.ca),
        "private_key": None if tls.client_key is None else str(tls.client_key),
        "certificate_chain": None if tls.client_cert is None else str(tls.client_cert),
    }


def aio_channel(
    address: str, options: list[tuple[str, int | str]], tls: ClientTls | None = None
) -> grpc.aio.Channel:
    """A long-lived asyncio channel, secure when `tls` is given."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, tls.credentials(), options=options)
