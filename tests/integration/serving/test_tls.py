"""TLS and mutual TLS: the scoring server serves over TLS with a certificate (plaintext clients refused,
health reachable without a token), and with a client CA it refuses clients that present no certificate."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelloop.client import ScoringClient
from modelloop.contract.errors import ConfigError, UnavailableError

from .conftest import REF, Models


def _cert(name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, ca: bool = False):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert, key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_mutual_tls(start_server, models: Models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ca = _cert("modelloop-test-ca", None, ca=True)
    server_cert, server_key = _cert("localhost", ca)
    client_cert, client_key = _cert("a-client", ca)
    files = {"cert": _pem(server_cert), "key": _key_pem(server_key), "ca": _pem(ca[0])}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    server = start_server(
        tls_cert_file=tmp_path / "cert", tls_key_file=tmp_path / "key", tls_client_ca_file=tmp_path / "ca"
    )
    with ScoringClient(
        server.address,
        root_certificates=files["ca"],
        private_key=_key_pem(client_key),
        certificate_chain=_pem(client_cert),
    ) as client:
        assert len(client.predict(REF, models.rows(2)).predictions) == 2
    with (
        ScoringClient(server.address, root_certificates=files["ca"]) as anonymous,
        pytest.raises(UnavailableError),
    ):
        anonymous.predict(REF, models.rows(1), timeout=5)
    with ScoringClient(server.address) as plaintext, pytest.raises(UnavailableError):
        plaintext.predict(REF, models.rows(1), timeout=5)


def test_tls_without_client_certificates_keeps_health_reachable(
    start_server, models: Models, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    ca = _cert("modelloop-test-ca", None, ca=True)
    server_cert, server_key = _cert("localhost", ca)
    (tmp_path / "cert").write_bytes(_pem(server_cert))
    (tmp_path / "key").write_bytes(_key_pem(server_key))
    (tmp_path / "token").write_text("tls-token")
    server = start_server(
        tls_cert_file=tmp_path / "cert", tls_key_file=tmp_path / "key", token_file=tmp_path / "token"
    )
    ca_pem = _pem(ca[0])
    with ScoringClient(server.address, root_certificates=ca_pem, token="tls-token") as client:
        assert len(client.predict(REF, models.rows(2)).predictions) == 2
    with (
        ScoringClient(server.address, root_certificates=ca_pem) as anonymous,
        pytest.raises(ConfigError, match="not authenticated"),
    ):
        anonymous.predict(REF, models.rows(1), timeout=5)
    channel = grpc.secure_channel(server.address, grpc.ssl_channel_credentials(ca_pem))
    try:  # a TLS health probe needs no client certificate and no token
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()
    with ScoringClient(server.address) as plaintext, pytest.raises(UnavailableError):
        plaintext.predict(REF, models.rows(1), timeout=5)
