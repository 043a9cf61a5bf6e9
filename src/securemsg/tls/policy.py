# -*- test-case-name: tests.test_tls -*-
"""
securemsg's server TLS policy: loading the certificate and key, and the
OpenSSL context every connection is made from.

Why not Twisted's C{ssl:} endpoint string: it cannot carry a key passphrase,
a TLS version floor, a cipher list or a curve list, all of which this policy
needs.  So the server listens on a plain transport endpoint (C{tcp:50000},
C{tcp6:...}, C{unix:...}) wrapped in TLS (L{securemsg.server.guard}) with a
L{ServerTLS} connection creator built from Twisted's L{CertificateOptions}.
The creator hands out connections from a context that can be replaced, which
is what a certificate reload needs (C{CertificateOptions} caches one).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from getpass import getpass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL, crypto
from OpenSSL._util import lib as _openssl_lib
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.ssl import (
    AcceptableCiphers,
    Certificate,
    CertificateOptions,
    TLSVersion,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from securemsg.tls import certs

#: Mozilla's "intermediate" TLS 1.2 cipher suites (server side guidelines,
#: version 5.7), forward secret AEAD only.  The DHE suites of the profile are
#: left out: they need DH parameters, and every client the profile targets
#: speaks ECDHE.  TLS 1.3 suites are OpenSSL's defaults, which are the
#: profile's.
INTERMEDIATE_CIPHERS: Final = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)

#: Key exchange groups of the same profile (Twisted leaves OpenSSL's
#: defaults, which include X448 and P-521).
INTERMEDIATE_GROUPS: Final = b"X25519:P-256:P-384"

TLS_VERSIONS: Final = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}

PASSPHRASE_ENVIRONMENT_VARIABLE: Final = "SECUREMSG_KEY_PASSPHRASE"  # noqa: S105

#: The key file looked for beside the certificate when the certificate file
#: has no key in it and none is named.
DEFAULT_KEY_NAME: Final = "private.key"

#: Why a client's certificate (first) and the intermediates it sent would
#: not verify now, or L{None} if they would; see
#: L{LoadedTLS.client_certificate_check}.
ClientCertificateCheck = Callable[[Sequence[x509.Certificate]], str | None]


class TLSConfigError(Exception):
    """
    The TLS configuration cannot be used.  The message is one line that says
    what is wrong and how to fix it, fit to show an operator as it is.
    """


@dataclass(frozen=True)
class PassphraseSource:
    """
    Where the passphrase of an encrypted key comes from, in this order: a
    file, the C{SECUREMSG_KEY_PASSPHRASE} environment variable, then a prompt
    if standard input is a terminal.  It is asked for only when the key is
    encrypted.
    """

    path: str | None = None
    environ: Mapping[str, str] | None = None
    prompt: Callable[[str], str] | None = None

    @classmethod
    def from_process(cls, path: str | None = None) -> PassphraseSource:
        """
        The sources a real server process has.  A passphrase typed at the
        prompt is remembered, so that a certificate reload (when there is no
        terminal any more) can open the key again.
        """
        interactive = sys.stdin is not None and sys.stdin.isatty()
        return cls(
            path, os.environ, _RememberingPrompt(getpass) if interactive else None
        )

    def get(self, key_path: str) -> bytes | None:
        """
        The passphrase, or L{None} when no source has one.

        @raise TLSConfigError: if the passphrase file cannot be used.
        """
        if self.path is not None:
            try:
                return certs.read_passphrase_file(self.path)
            except certs.PassphraseFileError as error:
                raise TLSConfigError(str(error)) from None
        if self.environ is not None:
            value = self.environ.get(PASSPHRASE_ENVIRONMENT_VARIABLE)
            if value is not None:
                return value.encode("utf-8")
        if self.prompt is not None:
            return self.prompt(f"Passphrase for {key_path}: ").encode("utf-8")
        return None


class _RememberingPrompt:
    """A prompt that asks once and then gives the same answer."""

    def __init__(self, ask: Callable[[str], str]) -> None:
        self._ask = ask
        self._answer: str | None = None

    def __call__(self, prompt: str) -> str:
        if self._answer is None:
            self._answer = self._ask(prompt)
        return self._answer


@dataclass(frozen=True)
class ServerCredentials:
    """
    A certificate chain and its private key, loaded and checked.

    @ivar chain: the server certificate first, then any intermediates.
    """

    chain: list[x509.Certificate]
    key: certs.PrivateKey
    cert_path: str
    key_path: str

    @property
    def certificate(self) -> x509.Certificate:
        """The server's own certificate."""
        return self.chain[0]


def _read(path: str, what: str, hint: str = "") -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        if what == "certificate":
            hint = "make one with: securemsg gencert"
        shown = f" ({hint})" if hint else ""
        raise TLSConfigError(f"{what} file {path} not found{shown}") from None
    except OSError as error:
        raise TLSConfigError(
            f"cannot read {what} file {path}: {error.strerror}"
        ) from None


def key_path_for(cert_path: str, key_path: str | None) -> str:
    """
    Which file holds the private key: C{key_path} if given; else the
    certificate file itself if it holds a key; else C{private.key} beside the
    certificate.
    """
    if key_path is not None:
        return key_path
    try:
        if certs.pem_has_private_key(Path(cert_path).read_bytes()):
            return cert_path
    except OSError:
        pass
    return str(Path(cert_path).with_name(DEFAULT_KEY_NAME))


#: Said when the key was looked for where L{key_path_for} guesses it.
GUESSED_KEY_HINT: Final = "give its path with --key"


def load_private_key(
    path: str, passphrases: PassphraseSource, *, not_found_hint: str = ""
) -> certs.PrivateKey:
    """
    Load a PEM private key, asking for its passphrase only if it has one.

    @param not_found_hint: added in brackets if the file does not exist
        (L{GUESSED_KEY_HINT} when nobody named the file).
    @raise TLSConfigError: if it is missing, unreadable, encrypted without a
        passphrase, or the passphrase is wrong.
    """
    data = _read(path, "private key", not_found_hint)
    passphrase = None
    if b"ENCRYPTED" in data:
        passphrase = passphrases.get(path)
        if passphrase is None:
            raise TLSConfigError(
                f"private key {path} is encrypted: give its passphrase with "
                f"--key-passphrase-file or {PASSPHRASE_ENVIRONMENT_VARIABLE}"
            )
    try:
        key = load_pem_private_key(data, passphrase)
    except TypeError:
        raise TLSConfigError(
            f"private key {path} is encrypted: give its passphrase with "
            f"--key-passphrase-file or {PASSPHRASE_ENVIRONMENT_VARIABLE}"
        ) from None
    except ValueError:
        if passphrase is not None:
            # Now and then a wrong passphrase decrypts to data with valid
            # padding, and cryptography then reports unreadable key data.
            raise TLSConfigError(
                f"wrong passphrase for private key {path} (or the file is damaged)"
            ) from None
        raise TLSConfigError(f"{path} does not hold a usable PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TLSConfigError(
            f"private key {path} is of an unsupported type; use ECDSA or RSA"
        )
    return key


def load_credentials(
    cert_path: str,
    key_path: str | None = None,
    passphrases: PassphraseSource | None = None,
) -> ServerCredentials:
    """
    Load and check a certificate chain and its key.

    @raise TLSConfigError: for anything that would stop the server from
        serving with them.
    """
    try:
        chain = x509.load_pem_x509_certificates(_read(cert_path, "certificate"))
    except ValueError:
        raise TLSConfigError(
            f"{cert_path} holds no PEM certificate (make one with: securemsg gencert)"
        ) from None
    resolved_key_path = key_path_for(cert_path, key_path)
    key = load_private_key(
        resolved_key_path,
        passphrases or PassphraseSource(),
        not_found_hint=GUESSED_KEY_HINT if key_path is None else "",
    )
    if not certs.key_matches_certificate(key, chain[0]):
        raise TLSConfigError(
            f"private key {resolved_key_path} does not match certificate {cert_path}"
        )
    return ServerCredentials(chain, key, cert_path, resolved_key_path)


def make_server_context(
    credentials: ServerCredentials,
    minimum: TLSVersion = TLSVersion.TLSv1_2,
    *,
    client_cas: list[x509.Certificate] | None = None,
    require_client_certificate: bool = True,
    crl: x509.CertificateRevocationList | None = None,
) -> SSL.Context:
    """
    Build the OpenSSL context for serving with C{credentials}: TLS 1.2 or
    better (or C{minimum}), Mozilla intermediate ciphers and groups in the
    client's order of preference, no compression, no renegotiation, session
    resumption on.

    @param client_cas: if given, clients' certificates are verified against
        these CAs (mutual TLS): a client without one fails the handshake if
        C{require_client_certificate}, else it may go on as a guest; a
        client whose certificate does not verify always fails.
    @param crl: certificates this revocation list names are refused.
    """
    verification: dict[str, object] = {}
    if client_cas:
        verification = {
            "trustRoot": trustRootFromCertificates(
                [Certificate(crypto.X509.from_cryptography(ca)) for ca in client_cas]
            ),
        }
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(credentials.key),
        certificate=crypto.X509.from_cryptography(credentials.chain[0]),
        extraCertChain=[
            crypto.X509.from_cryptography(cert) for cert in credentials.chain[1:]
        ],
        raiseMinimumTo=minimum,
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(
            INTERMEDIATE_CIPHERS
        ),
        enableSessions=True,
        enableSessionTickets=True,
        **verification,  # type: ignore[arg-type]
    )
    # Mozilla's profiles let the client's order win (every suite offered is
    # strong, and a client without AES hardware then gets ChaCha20), but
    # CertificateOptions always asks for the server's order and has no
    # switch for it; pyOpenSSL cannot clear an option once set.
    options._options &= ~SSL.OP_CIPHER_SERVER_PREFERENCE
    # A trust root makes CertificateOptions require a client certificate,
    # and it refuses a requireCertificate argument beside one (TypeError):
    # make the certificate optional here, before the context is made.
    if client_cas:
        options.requireCertificate = require_client_certificate
    context = options.getContext()
    # CertificateOptions cannot limit the groups or refuse renegotiation.
    # pyOpenSSL has no public call for a group list, so use the binding it
    # ships; set_tmp_ecdh would allow only one curve.
    if not _openssl_lib.SSL_CTX_set1_curves_list(context._context, INTERMEDIATE_GROUPS):
        raise TLSConfigError("this OpenSSL cannot limit the key exchange groups")
    context.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION)
    # An idle chat connection needs no 16 KiB+ read and write buffers.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    if crl is not None:
        store = context.get_cert_store()
        assert store is not None
        store.add_crl(crl)
        store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
    return context


@dataclass(frozen=True)
class TLSSettings:
    """
    Where the server's TLS material comes from: read at start, and again on
    each reload.

    @ivar client_ca_path: PEM file of CAs whose client certificates are
        accepted (mutual TLS); L{None} for none.
    @ivar client_auth: C{"required"}: clients must present a certificate;
        C{"optional"}: clients without one are guests.
    @ivar crl_path: PEM certificate revocation list of the client CA.
    """

    cert_path: str
    key_path: str | None = None
    passphrases: PassphraseSource = PassphraseSource()
    minimum: TLSVersion = TLSVersion.TLSv1_2
    client_ca_path: str | None = None
    client_auth: str = "required"
    crl_path: str | None = None

    def files(self) -> list[str]:
        """Every file these settings read."""
        found = [self.cert_path, key_path_for(self.cert_path, self.key_path)]
        found += [path for path in (self.client_ca_path, self.crl_path) if path]
        return found


@dataclass(frozen=True)
class LoadedTLS:
    """TLS material loaded from L{TLSSettings}, and the context made of it."""

    credentials: ServerCredentials
    context: SSL.Context
    client_cas: list[x509.Certificate]
    crl: x509.CertificateRevocationList | None

    def client_certificate_check(self) -> ClientCertificateCheck | None:
        """
        How a new handshake would judge a client certificate with this
        material (verified by OpenSSL against the client CAs and the CRL,
        as in the handshake, at the time of each check): for the
        connections made before it was loaded.

        @return: L{None} if client certificates are not checked at all.
        """
        if not self.client_cas:
            return None
        store = crypto.X509Store()
        for ca in self.client_cas:
            store.add_cert(crypto.X509.from_cryptography(ca))
        if self.crl is not None:
            store.add_crl(self.crl)
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK)

        def check(chain: Sequence[x509.Certificate]) -> str | None:
            if not chain:
                return "no certificate"
            leaf, *intermediates = (crypto.X509.from_cryptography(c) for c in chain)
            try:
                crypto.X509StoreContext(store, leaf, intermediates).verify_certificate()
            except crypto.X509StoreContextError as error:
                return str(error)
            return None

        return check


def _load_client_cas(path: str) -> list[x509.Certificate]:
    try:
        cas = x509.load_pem_x509_certificates(_read(path, "client CA"))
    except ValueError:
        raise TLSConfigError(f"{path} holds no PEM certificate") from None
    for ca in cas:
        try:
            constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.value.ca:
            raise TLSConfigError(
                f"client CA {path} holds a certificate that is not a CA"
                " (make one with: securemsg ca init DIR)"
            )
    return cas


def _load_crl(
    path: str, issuers: list[x509.Certificate], now: datetime
) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(_read(path, "CRL"))
    except ValueError:
        raise TLSConfigError(
            f"{path} holds no PEM certificate revocation list"
        ) from None
    signed = any(
        crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        for ca in issuers
    )
    if not signed:
        raise TLSConfigError(f"CRL {path} is not signed by the client CA")
    next_update = crl.next_update_utc
    if next_update is not None and next_update < now:
        raise TLSConfigError(
            f"CRL {path} expired on {next_update:%Y-%m-%d %H:%M} UTC; every client"
            " certificate would be refused (re-sign it: securemsg ca crl DIR)"
        )
    return crl


def load_tls(
    settings: TLSSettings, *, strict: bool = False, now: datetime | None = None
) -> LoadedTLS:
    """
    Load and check everything in C{settings} and make the context.

    @param strict: also refuse a certificate that has expired, is not yet
        valid, or has no SubjectAltName (for a reload: the old certificate
        stays in service instead).  At start these are only warned about.
    @raise TLSConfigError: for anything that would stop serving with it.
    """
    now = now or datetime.now(UTC)
    credentials = load_credentials(
        settings.cert_path, settings.key_path, settings.passphrases
    )
    if strict:
        certificate = credentials.certificate
        if certificate.not_valid_after_utc < now:
            raise TLSConfigError(f"certificate {settings.cert_path} has expired")
        if certificate.not_valid_before_utc > now:
            raise TLSConfigError(f"certificate {settings.cert_path} is not valid yet")
        if not certs.subject_alt_names(certificate):
            raise TLSConfigError(
                f"certificate {settings.cert_path} has no SubjectAltName;"
                " clients would refuse it"
            )
    client_cas: list[x509.Certificate] = []
    crl = None
    if settings.client_ca_path is not None:
        client_cas = _load_client_cas(settings.client_ca_path)
        if settings.crl_path is not None:
            crl = _load_crl(settings.crl_path, client_cas, now)
    elif settings.crl_path is not None:
        raise TLSConfigError("a CRL needs the client CA that signed it (--client-ca)")
    if settings.client_auth not in ("required", "optional"):
        raise TLSConfigError(
            "client authentication must be required or optional,"
            f" not {settings.client_auth!r}"
        )
    context = make_server_context(
        credentials,
        settings.minimum,
        client_cas=client_cas or None,
        require_client_certificate=settings.client_auth == "required",
        crl=crl,
    )
    return LoadedTLS(credentials, context, client_cas, crl)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    Makes each server-side TLS connection from the current context.

    Replacing L{context} changes the certificate new handshakes see, without
    touching connections already made.
    """

    def __init__(self, context: SSL.Context) -> None:
        self.context = context

    def serverConnectionForTLS(
        self, tlsProtocol: TLSMemoryBIOProtocol
    ) -> SSL.Connection:
        return SSL.Connection(self.context, None)
