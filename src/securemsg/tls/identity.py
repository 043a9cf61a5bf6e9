# -*- test-case-name: tests.test_ca -*-
"""
Who a client certificate names: the C{securemsg:user:NAME} subjectAltName
URI that L{securemsg.admin.ca} writes into the certificates it issues, and
that the server reads to learn who a client is.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509

from securemsg.protocol import wire

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
