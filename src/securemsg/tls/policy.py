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
is what a certificate reload and the daily renewal of the session ticket
keys need (C{CertificateOptions} caches one).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from getpass import getpass
from pathlib import Path
from typing import Final

from cryptography import x509
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
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from securemsg.tls import certs, files

# Both were defined here before the files had their own reader; the names
# people import stay.
from securemsg.tls.files import (
    PASSPHRASE_ENVIRONMENT_VARIABLE as PASSPHRASE_ENVIRONMENT_VARIABLE,
)
from securemsg.tls.files import TLSConfigError as TLSConfigError

#: Mozilla's "intermediate" TLS 1.2 cipher suites (server side guidelines,
#: version 6.0, which dropped version 5.7's DHE suites), forward secret AEAD
#: only.  TLS 1.3 suites are OpenSSL's defaults, which are the profile's.
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

#: Key exchange groups of Mozilla's intermediate and modern profiles
#: (guidelines 6.0): X25519MLKEM768, the post-quantum hybrid that current
#: browsers and OpenSSL 3.5+ offer, so that what is recorded today cannot be
#: decrypted by a quantum computer later; then the classical groups every
#: other client has.  The hybrid is a tuple of its own (OpenSSL 3.5's "/"):
#: the server takes it from any client that supports it, even one that
#: lists it after X25519 (asking for its key share if need be), and among
#: the classical groups the client's order wins.  (Twisted leaves OpenSSL's
#: defaults, which include X448 and P-521.)
INTERMEDIATE_GROUPS: Final = b"X25519MLKEM768/X25519:P-256:P-384"

#: The same without the hybrid, for an OpenSSL that does not know it
#: (before 3.5), as Mozilla's configuration generator does.
CLASSICAL_GROUPS: Final = b"X25519:P-256:P-384"

TLS_VERSIONS: Final = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}

#: The key file looked for beside the certificate when the certificate file
#: has no key in it and none is named.
DEFAULT_KEY_NAME: Final = "private.key"

_log = Logger()

#: Why a client's certificate (first) and the intermediates it sent would
#: not verify now, or L{None} if they would; see
#: L{LoadedTLS.client_certificate_check}.
ClientCertificateCheck = Callable[[Sequence[x509.Certificate]], str | None]


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


def _read_credentials(
    cert_path: str,
    key_path: str | None,
    passphrases: PassphraseSource | None,
    findings: files.Findings,
) -> ServerCredentials:
    """
    Read the certificate chain and its key, stopping at the first error (so
    that nobody is asked for the passphrase of a key that cannot be used).

    @raise TLSConfigError: with the first error in C{findings}.
    """
    chain = files.read_certificates(cert_path, findings)
    findings.raise_first_error()
    resolved_key_path = key_path_for(cert_path, key_path)
    key = files.read_private_key(
        resolved_key_path,
        passphrases or PassphraseSource(),
        findings,
        not_found_hint=GUESSED_KEY_HINT if key_path is None else "",
        cert_path=cert_path,
    )
    findings.raise_first_error()
    assert key is not None
    files.check_key_matches(key, resolved_key_path, cert_path, chain, findings)
    findings.raise_first_error()
    return ServerCredentials(chain, key, cert_path, resolved_key_path)


def load_credentials(
    cert_path: str,
    key_path: str | None = None,
    passphrases: PassphraseSource | None = None,
) -> ServerCredentials:
    """
    Load a certificate chain and its key, and check that they belong
    together (for a server, or a client's own certificate; the dates and
    names of a server certificate are L{load_tls}'s to check).

    @raise TLSConfigError: for anything that would stop them being used.
    """
    return _read_credentials(cert_path, key_path, passphrases, files.Findings())


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
    better (or C{minimum}), Mozilla intermediate ciphers in the client's
    order of preference, its groups (the post-quantum hybrid for every
    client that supports it, else the client's order: L{set_groups}), no
    compression, no renegotiation, session resumption on.

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
    if set_groups(context) != INTERMEDIATE_GROUPS:
        _log.warn(
            "this OpenSSL has no X25519MLKEM768 (OpenSSL 3.5 and later have it):"
            " key exchange without the post-quantum hybrid"
        )
    context.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION)
    # An idle chat connection needs no 16 KiB+ read and write buffers.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    if crl is not None:
        store = context.get_cert_store()
        assert store is not None
        store.add_crl(crl)
        store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
    return context


def set_groups(
    context: SSL.Context,
    choices: Sequence[bytes] = (INTERMEDIATE_GROUPS, CLASSICAL_GROUPS),
) -> bytes:
    """
    Limit C{context}'s key exchange groups to the first of C{choices} that
    this OpenSSL can use.

    @return: the list set.
    @raise TLSConfigError: if it can use none of them.
    """
    # pyOpenSSL has no public call for a group list, so use the binding it
    # ships; set_tmp_ecdh would allow only one curve.
    for groups in choices:
        if _openssl_lib.SSL_CTX_set1_curves_list(context._context, groups):
            return groups
        # A group this OpenSSL does not know: not to be taken for the error
        # of a later call.
        _openssl_lib.ERR_clear_error()
    raise TLSConfigError("this OpenSSL cannot limit the key exchange groups")


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

    def renewed(self, settings: TLSSettings) -> LoadedTLS:
        """
        The same material in a new context (nothing is read again): OpenSSL
        makes new session ticket keys and an empty session cache for each
        context, so sessions from the old one no longer resume.
        """
        return replace(
            self,
            context=_context_for(settings, self.credentials, self.client_cas, self.crl),
        )


def _context_for(
    settings: TLSSettings,
    credentials: ServerCredentials,
    client_cas: list[x509.Certificate],
    crl: x509.CertificateRevocationList | None,
) -> SSL.Context:
    return make_server_context(
        credentials,
        settings.minimum,
        client_cas=client_cas or None,
        require_client_certificate=settings.client_auth == "required",
        crl=crl,
    )


def load_tls(settings: TLSSettings, *, now: datetime | None = None) -> LoadedTLS:
    """
    Load and check everything in C{settings} and make the context: at start
    and at each reload alike, with the findings C{securemsg check} shows
    (L{securemsg.tls.files}).  Warnings are logged.

    @raise TLSConfigError: with the first error: anything that would stop
        serving with it, including a certificate that has expired, is not
        yet valid, or names no host.
    """
    now = certs.as_utc(now)
    findings = files.Findings()
    credentials = _read_credentials(
        settings.cert_path, settings.key_path, settings.passphrases, findings
    )
    files.check_server_certificate(
        credentials.certificate, settings.cert_path, now, findings
    )
    findings.raise_first_error()
    client_cas: list[x509.Certificate] = []
    crl = None
    if settings.client_ca_path is not None:
        client_cas = files.read_client_cas(settings.client_ca_path, now, findings)
        findings.raise_first_error()
    if settings.crl_path is not None:
        crl = files.read_crl(
            settings.crl_path, settings.client_ca_path, client_cas, now, findings
        )
        findings.raise_first_error()
    files.check_revocation(settings.client_ca_path, settings.crl_path, findings)
    if settings.client_auth not in ("required", "optional"):
        raise TLSConfigError(
            "client authentication must be required or optional,"
            f" not {settings.client_auth!r}"
        )
    context = _context_for(settings, credentials, client_cas, crl)
    for warning in findings.messages("warning"):
        # Not "warning=": trial's reporter takes a log event with a
        # "warning" key for a Python warning and fails on it.
        _log.warn("{problem}", problem=warning)
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
