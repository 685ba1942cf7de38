"""mqtts://: certificates and host names are verified unless the config says otherwise."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import Broker, Daemon, short_tmpdir, wait_until

MakeDaemon = Callable[..., Daemon]
MakeBroker = Callable[..., Broker]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(where: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for "localhost": (ca, chain, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("mqchat test CA"))
        .issuer_name(_name("mqchat test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, chain, key_file = where / "ca.pem", where / "server.pem", where / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, chain, key_file


def configured(
    make_daemon: MakeDaemon, broker: Broker, name: str, broker_table: str, url: str | None = None
) -> Daemon:
    """A chatd whose [broker] table comes from a config file."""
    daemon = make_daemon(name, on=broker, start=False)
    config = daemon.home / "chatd.toml"
    config.write_text(f'[broker]\nurl = "{url or broker.url}"\n{broker_table}')
    daemon.extra_env = {"MQCHAT_CONFIG": str(config), "MQCHAT_BROKER": ""}
    return daemon.start(wait_connected=False)


def test_mqtts_verifies_the_certificate_and_the_host_name(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    pki = short_tmpdir("mqpki-")
    ca_file, chain, key = make_pki(pki)
    broker = make_broker(tls=(chain, key))

    # With the right CA: connected, and two users talk over TLS.
    alice = configured(make_daemon, broker, "alice", f'ca_file = "{ca_file}"\n')
    bob = configured(make_daemon, broker, "bob", f'ca_file = "{ca_file}"\n')
    alice.wait_connected()
    bob.wait_connected()
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    alice.ok("send", room, "over tls")
    assert tail.messages(1)[0]["text"] == "over tls"

    # The system CAs do not know this one: refused, and the log says why.
    stranger = configured(make_daemon, broker, "carol", "")
    wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in stranger.log(), "a refused certificate")
    assert stranger.status()["broker"]["connected"] is False

    # The right CA but another host name than the certificate's: refused too.
    wrong_host = Broker.__new__(Broker)
    wrong_host.url = broker.url.replace("localhost", "127.0.0.2")
    dave = configured(make_daemon, wrong_host, "dave", f'ca_file = "{ca_file}"\n')
    wait_until(
        lambda: "CERTIFICATE_VERIFY_FAILED" in dave.log() or "refused" in dave.log(),
        "a refused host name",
    )
    assert dave.status()["broker"]["connected"] is False

    # tls_insecure turns the checks off, as the config file says it does.
    eve = configured(make_daemon, broker, "eve", "tls_insecure = true\n")
    eve.wait_connected()
