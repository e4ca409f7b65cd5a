"""Credentials of dinet's control channels: a project CA, a key and certificate per identity (a controller, a
collector, a metric agent, a node agent), made with `cryptography`; gRPC's own TLS for mutual
authentication, and the identity a peer's certificate names. An optional token is a second factor, read
from a file or the environment, never from a command line, and compared in constant time.

    dinet certs init DIR                  # DIR/ca.key (0600) and DIR/ca.crt
    dinet certs issue NAME --dir DIR      # DIR/NAME.key (0600) and DIR/NAME.crt, signed by the CA
    dinet certs revoke NAME --dir DIR     # NAME's certificate into DIR/crl.pem, a CRL the CA signs

Every server (collector, node agent) reads DIR/crl.pem beside its own credentials, again whenever it changes:
a revoked certificate is refused at its next call, and the report streams it holds open are closed.

A certificate's identity is its common name; it also carries NAME as a DNS subject-alternative name, which
a client checks against the identity it expects of the server (gRPC's target-name override), so a server
cannot pass for another either."""

from __future__ import annotations

import datetime
import functools
import hmac
import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

CA_NAME = "dinet-ca"
CRL_FILE = "crl.pem"
log = logging.getLogger(__name__)
_IDENTITY = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-."


def _check_name(name: str) -> None:
    if not name or len(name) > 63 or any(c not in _IDENTITY for c in name) or name.startswith(("-", ".")):
        raise ConfigError(f"an identity is 1-63 letters, digits, '-' or '.', not {name!r}")


def _write_private(path: Path, data: bytes) -> None:
    """Writes a key readable by its owner only (mode 0600 from the start, never world-readable on the way)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _check_private(path: Path) -> None:
    """Refuses a private key that others may read (as ssh does): it is no secret any more."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return  # _read says it is missing
    except OSError as e:
        raise ConfigError(f"the key {path} cannot be read: {e.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"the key {path} is readable by others (mode {mode & 0o777:o}): chmod 600 it")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} is missing (make it with `dinet certs`)") from None
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be read: {e.strerror}") from None


def init_ca(directory: Path, days: int = 3650) -> Path:
    """A new CA in `directory` (refused if one is there: its certificates would all stop being trusted)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "ca.key").exists():
        raise ConfigError(f"{directory} already holds a CA (ca.key): remove it first to start anew")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(key, hashes.SHA256())
    )
    _write_private(
        directory / "ca.key",
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    (directory / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory / "ca.crt"


def issue(
    directory: Path,
    name: str,
    days: int = 825,
    addresses: tuple[str, ...] = (),
    not_before: datetime.datetime | None = None,
    force: bool = False,
) -> tuple[Path, Path]:
    """A key and a certificate for identity `name`, signed by the CA in `directory`; usable by a server and a
    client. `addresses`: IP addresses it may also be reached by (subject-alternative names). An identity that
    has a key already is refused unless `force` (its holder's key would silently stop working); `ca` is never
    an identity (its files are the CA's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    _check_name(name)
    if name == "ca":
        raise ConfigError("'ca' names the CA's own files (ca.key, ca.crt): choose another identity")
    if not force and ((directory / f"{name}.key").exists() or (directory / f"{name}.crt").exists()):
        raise ConfigError(f"{directory} already holds {name}'s key or certificate: --force to replace them")
    ca_key = serialization.load_pem_private_key(_read(directory / "ca.key", "the CA key"), None)
    ca_cert = x509.load_pem_x509_certificate(_read(directory / "ca.crt", "the CA certificate"))
    if ca_cert.public_key().public_numbers() != ca_key.public_key().public_numbers():  # type: ignore[union-attr]
        raise ConfigError(f"{directory}/ca.key does not match {directory}/ca.crt")
    alt: list[Any] = [x509.DNSName(name)]
    for a in addresses:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            raise ConfigError(f"not an IP address: {a!r}") from None
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    _write_private(
        key_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@dataclass(frozen=True)
class Identity:
    """One identity's credentials: its key and certificate, and the CA that vouches for its peers."""

    name: str
    key: bytes
    cert: bytes
    ca: bytes
    directory: Path | None = None  # where it was loaded from: its CRL (crl.pem) is there

    @classmethod
    def load(cls, directory: Path | str, name: str) -> Identity:
        """DIR/NAME.key, DIR/NAME.crt and DIR/ca.crt, checked: present, readable, the key matching the
        certificate, the certificate naming NAME and signed by the CA."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        d = Path(directory)
        _check_private(d / f"{name}.key")
        key, cert, ca = (
            _read(d / f"{name}.key", "the key"),
            _read(d / f"{name}.crt", "the certificate"),
            _read(d / "ca.crt", "the CA certificate"),
        )
        try:
            k = serialization.load_pem_private_key(key, None)
            c = x509.load_pem_x509_certificate(cert)
            a = x509.load_pem_x509_certificate(ca)
        except ValueError as e:
            raise ConfigError(f"{d}: {name}'s key, certificate or the CA certificate is not PEM: {e}") from None
        if k.public_key().public_numbers() != c.public_key().public_numbers():  # type: ignore[union-attr]
            raise ConfigError(f"{d / f'{name}.key'} does not match {d / f'{name}.crt'}")
        if identity_of_cert(c) != name:
            raise ConfigError(f"{d / f'{name}.crt'} is {identity_of_cert(c)!r}'s certificate, not {name!r}'s")
        try:
            c.verify_directly_issued_by(a)
        except (ValueError, TypeError, Exception) as e:  # cryptography raises InvalidSignature or ValueError
            raise ConfigError(f"{d / f'{name}.crt'} is not signed by {d / 'ca.crt'}: {e or type(e).__name__}") from None
        return cls(name, key, cert, ca, d)

    def revocations(self) -> Revocations:
        """The CRL beside these credentials (DIR/crl.pem; none yet: nothing revoked), checked as it changes."""
        return Revocations((self.directory or Path(".")) / CRL_FILE, self.ca)

    def server_credentials(self) -> Any:
        """gRPC TLS that requires a client certificate from this CA (mutual TLS)."""
        import grpc

        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel(self, address: str, server: str, options: list[tuple[str, Any]] | None = None) -> Any:
        """A gRPC channel to `address` presenting this identity, accepting only a server whose certificate
        names `server`; `options`: more gRPC channel options."""
        import grpc

        creds = grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )
        opts = [("grpc.ssl_target_name_override", server), *(options or [])]
        return grpc.secure_channel(address, creds, options=opts)


def revoke(directory: Path, name: str) -> Path:
    """Adds NAME's certificate (DIR/NAME.crt) to the CA's revocation list DIR/crl.pem (made if absent; the
    entries already there are kept), signed by the CA and written whole in one rename."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    _check_name(name)
    ca_key = serialization.load_pem_private_key(_read(directory / "ca.key", "the CA key"), None)
    ca_cert = x509.load_pem_x509_certificate(_read(directory / "ca.crt", "the CA certificate"))
    cert = x509.load_pem_x509_certificate(_read(directory / f"{name}.crt", "the certificate"))
    path = directory / CRL_FILE
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=3650))
    )
    serials = set()
    if path.exists():
        for r in _load_crl(path, ca_cert.public_key()):
            serials.add(r.serial_number)
            builder = builder.add_revoked_certificate(r)
    if cert.serial_number not in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    tmp.replace(path)
    return path


def _load_crl(path: Path, ca_public_key: Any) -> Any:
    from cryptography import x509

    try:
        crl = x509.load_pem_x509_crl(_read(path, "the revocation list"))
    except ValueError as e:
        raise ConfigError(f"{path} is not a PEM CRL: {e}") from None
    if not crl.is_signature_valid(ca_public_key):
        raise ConfigError(f"{path} is not signed by the project CA")
    return crl


class Revocations:
    """The serial numbers a CRL file revokes, read again when the file changes (checked at most every
    `every` seconds). A CRL that is absent revokes nothing; one that does not verify against the CA, or
    cannot be read, is refused at the start (ConfigError) and, once running, logged while the last good list
    stays in force (a bad file never lets a revoked certificate back in)."""

    def __init__(self, path: Path, ca_pem: bytes, every: float = 1.0, clock: Any = time.monotonic):
        from cryptography import x509

        self.path, self.every, self.clock = path, every, clock
        self._ca_key = x509.load_pem_x509_certificate(ca_pem).public_key()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = -1e18
        self.serials: frozenset[int] = frozenset()
        self.generation = 0  # grows each time the list changes
        self._reload(strict=True)

    def _reload(self, strict: bool) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            stamp = None
        except OSError as e:
            if strict:
                raise ConfigError(f"{self.path} cannot be read: {e.strerror}") from None
            return
        else:
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            serials = frozenset(r.serial_number for r in _load_crl(self.path, self._ca_key)) if stamp else frozenset()
        except ConfigError as e:
            if strict:
                raise
            log.error("%s; the last good revocation list stays in force", e)
            return
        self._stamp = stamp
        if serials != self.serials:
            self.serials, self.generation = serials, self.generation + 1
            log.warning("%s: %d certificate(s) revoked", self.path, len(serials))

    def refresh(self) -> int:
        """Re-reads the file if it changed (at most every `every` seconds); the list's generation."""
        now = self.clock()
        with self._lock:
            if now - self._checked >= self.every:
                self._checked = now
                self._reload(strict=False)
            return self.generation

    def revoked(self, serial: int | None) -> bool:
        self.refresh()
        return serial is not None and serial in self.serials


def identity_of_cert(cert: Any) -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def peer_identity(context: Any) -> str | None:
    """The identity (certificate common name) of an RPC's peer; None on a channel without TLS."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else None


def peer_serial(context: Any) -> int | None:
    """The serial number of an RPC peer's certificate; None on a channel without TLS."""
    pem = (context.auth_context().get("x509_pem_cert") or [b""])[0]
    return _serial_of(pem) if pem else None


@functools.lru_cache(maxsize=1024)
def _serial_of(pem: bytes) -> int:
    from cryptography import x509

    return int(x509.load_pem_x509_certificate(pem).serial_number)


def server_tls(cert: str | Path, key: str | Path) -> Any:
    """An ssl context serving HTTPS with this certificate (the project CA's, or any) and key; the key must be
    readable by its owner only. ConfigError for a missing, unreadable or mismatched pair."""
    import ssl

    _check_private(Path(key))
    _read(Path(cert), "the certificate")
    _read(Path(key), "the key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, ValueError) as e:
        raise ConfigError(f"{cert} and {key} are no certificate and key of one pair: {e}") from None
    return ctx


def client_tls(ca: str | Path | None = None) -> Any:
    """An ssl context for HTTPS clients that checks the server's certificate and name: against `ca` (the
    project CA, a PEM file) or, without one, the system's trusted CAs."""
    import ssl

    if ca is not None:
        _read(Path(ca), "the CA certificate")
    try:
        return ssl.create_default_context(cafile=str(ca) if ca else None)
    except ssl.SSLError as e:
        raise ConfigError(f"{ca} holds no CA certificate: {e}") from None


def read_token(path: str | None = None, env: str = "DINET_TOKEN") -> str:
    """A token from a file (its first line) or, without one, the environment variable `env`; '' if neither."""
    if path:
        text = _read(Path(path), "the token file").decode(errors="replace").strip()
        if not text:
            raise ConfigError(f"the token file {path} is empty")
        return text.splitlines()[0].strip()
    return os.environ.get(env, "").strip()


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison (no early exit that would tell how much of a guess was right)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def listen(server: Any, address: str, identity: Identity | None, what: str) -> tuple[int, str]:
    """Binds a gRPC server: mutual TLS with `identity`'s credentials, or (identity None: --insecure) in clear
    with a warning. Returns (port, address as bound); ConfigError if the address cannot be bound."""
    import logging

    try:
        if identity is None:
            logging.getLogger(__name__).warning("%s on %s WITHOUT TLS (--insecure)", what, address)
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, identity.server_credentials())
    except RuntimeError:  # grpc raises it for an address it cannot resolve or bind
        port = 0
    if port == 0:
        raise ConfigError(f"{what}: cannot listen on {address} (address not local, or the port is taken)")
    return port, f"{address.rsplit(':', 1)[0]}:{port}"
