# -*- test-case-name: tests.test_ca -*-
"""
Who a client certificate names: the C{securemsg:user:NAME} subjectAltName
URI that L{securemsg.admin.ca} writes into the certificates it issues, and
that the server reads to learn who a client is; and reading the CRL that
revokes such certificates.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from securemsg.protocol import wire
from securemsg.tls import certs

IDENTITY_URI_PREFIX: Final = "securemsg:user:"
"""What the subjectAltName URI of a client certificate starts with."""


def identity_uri(name: str) -> str:
    """The subjectAltName URI that names C{name}: C{securemsg:user:NAME}."""
    return f"{IDENTITY_URI_PREFIX}{name}"


def identity_from_certificate(cert: x509.Certificate) -> str | None:
    """
    The securemsg name a client certificate was issued to, or L{None}.

    The name comes from the one subjectAltName URI of the form
    C{securemsg:user:NAME}; the common name is not used, because a
    subject attribute is free text that any CA may fill in.  A DNS name
    would be wrong for a person (and TLS libraries would try to match it
    against host names), and an C{otherName} needs an OID of our own that
    few tools can show, so a URI in a private scheme it is.

    L{None} when the certificate has no such URI, has two naming different
    people, or the name breaks securemsg's name rules
    (L{securemsg.protocol.wire.name_problem}).  This does not verify the
    certificate: call it only on one the TLS layer has already verified
    against C{DIR/ca.pem} (with pyOpenSSL, pass
    C{peer_x509.to_cryptography()}).
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return None
    names = {
        uri[len(IDENTITY_URI_PREFIX) :]
        for uri in san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(IDENTITY_URI_PREFIX)
    }
    if len(names) != 1:
        return None
    (name,) = names
    return name if wire.name_problem(name) is None else None


class CRLError(Exception):
    """
    A CRL file cannot be used, with a one-line message for a person.
    """


def load_crl(
    path: certs.StrPath, issuer: x509.Certificate | None = None
) -> x509.CertificateRevocationList:
    """
    Read a PEM CRL, such as C{DIR/crl.pem}.

    @param issuer: If given, the CRL must be signed by this certificate's
        key and name it as its issuer (pass the CA certificate).
    @raise CRLError: If the file cannot be read or parsed, or C{issuer} did
        not sign it.
    """
    shown = os.fspath(path)
    try:
        with open(shown, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CRLError(f"CRL file {shown} is missing") from None
    except OSError as error:
        raise CRLError(
            f"cannot read {shown}: {certs.describe_os_error(error)}"
        ) from None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError as error:
        detail = " ".join((str(error) or type(error).__name__).split())
        raise CRLError(f"cannot parse the CRL {shown}: {detail}") from None
    if issuer is not None:
        public_key = issuer.public_key()
        if crl.issuer != issuer.subject or not (
            isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
            and crl.is_signature_valid(public_key)
        ):
            raise CRLError(
                f"the CRL {shown} is not signed by {issuer.subject.rfc4514_string()}"
            )
    return crl
