# -*- test-case-name: tests.test_ca -*-
"""
A small certificate authority for securemsg client certificates.

C{securemsg ca init DIR} makes the authority, C{securemsg ca issue DIR NAME}
gives one person a client certificate, and C{securemsg ca revoke DIR NAME}
takes it back by publishing a new certificate revocation list (CRL).  The
server, configured for mutual TLS, trusts C{DIR/ca.pem}, checks
C{DIR/crl.pem}, and learns who a client is with
L{identity_from_certificate}.  C{docs/ca.md} describes the directory and
every command; this package is both the Python API and the command.

The directory::

    DIR/ca.pem            the CA certificate (give it to the server)
    DIR/ca.key            its private key, mode 0600, optionally encrypted
    DIR/crl.pem           the current CRL, re-signed on every revocation
    DIR/index.json        every certificate ever issued, and its status
    DIR/issued/NAME.pem   NAME's certificate
    DIR/issued/NAME.key   its private key, mode 0600
    DIR/issued/NAME.p12   optionally, both in a password-protected PKCS#12
    DIR/.lock             taken while a command changes the directory

Everything is made with C{cryptography}; nothing runs the C{openssl}
binary.  A client certificate names its holder twice: C{CN=NAME} for people
reading it, and the URI C{securemsg:user:NAME} in its subjectAltName, which
is what L{identity_from_certificate} reads (see there for why not a DNS
name).

The package has three modules, and keeps every public name here:
L{authority} builds and signs (init, issue, revoke, CRLs), L{store} keeps the
directory (paths, index, lock, writing and putting back on failure), and
L{command} is C{securemsg ca} itself.
"""

from securemsg.admin.ca.authority import (
    DEFAULT_CA_DAYS,
    DEFAULT_CA_NAME,
    DEFAULT_CLIENT_DAYS,
    DEFAULT_CRL_DAYS,
    REVOCATION_REASONS,
    IssuedCertificate,
    init_ca,
    issue,
    refresh_crl,
    revoke,
)
from securemsg.admin.ca.command import CA_PASSPHRASE_ENVIRONMENT_VARIABLE, CAOptions
from securemsg.admin.ca.store import (
    CAError,
    CAPaths,
    CertificateRecord,
    Passphrase,
    ca_key_is_encrypted,
    ca_paths,
    directory_warnings,
    list_certificates,
    load_ca_certificate,
    load_crl,
)
from securemsg.tls.identity import (
    IDENTITY_URI_PREFIX,
    identity_from_certificate,
    identity_uri,
)

__all__ = [
    "CA_PASSPHRASE_ENVIRONMENT_VARIABLE",
    "DEFAULT_CA_DAYS",
    "DEFAULT_CA_NAME",
    "DEFAULT_CLIENT_DAYS",
    "DEFAULT_CRL_DAYS",
    "IDENTITY_URI_PREFIX",
    "REVOCATION_REASONS",
    "CAError",
    "CAOptions",
    "CAPaths",
    "CertificateRecord",
    "IssuedCertificate",
    "Passphrase",
    "ca_key_is_encrypted",
    "ca_paths",
    "directory_warnings",
    "identity_from_certificate",
    "identity_uri",
    "init_ca",
    "issue",
    "list_certificates",
    "load_ca_certificate",
    "load_crl",
    "refresh_crl",
    "revoke",
]
