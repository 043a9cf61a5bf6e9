# -*- test-case-name: tests.test_fingerprint -*-
"""
C{securemsg fingerprint FILE | HOST[:PORT]}: the SHA-256 fingerprint of a
certificate, in the C{sha256:} form that C{securemsg chat --pin} takes.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import ClassVar, Final, TextIO

from cryptography import x509

from securemsg.admin.command import (
    CommandError,
    CommandOptions,
    describe_os_error,
    one_argument,
)
from securemsg.client.api import split_address
from securemsg.tls import certs

#: Exit status when the server cannot be reached, as for C{securemsg chat}.
EXIT_UNREACHABLE: Final = 3


def server_certificate(host: str, port: int, timeout: float = 10.0) -> x509.Certificate:
    """
    The certificate a TLS server presents, fetched without trusting it (this
    only looks; it never sends anything over the connection).

    @raise CommandError: if the server cannot be reached or speaks no TLS.
    """
    try:
        pem = ssl.get_server_certificate((host, port), timeout=timeout)
    except (ssl.SSLError, ConnectionError, TimeoutError, socket.gaierror) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise CommandError(
            f"cannot get a certificate from {host}:{port}: {reason}", EXIT_UNREACHABLE
        ) from None
    except OSError as error:
        raise CommandError(
            f"cannot get a certificate from {host}:{port}: {describe_os_error(error)}",
            EXIT_UNREACHABLE,
        ) from None
    return x509.load_pem_x509_certificate(pem.encode("ascii"))


class FingerprintOptions(CommandOptions):
    """
    C{securemsg fingerprint}: print a certificate's fingerprint.
    """

    synopsis = "FILE | HOST[:PORT]"
    longdesc = (
        "Print the SHA-256 fingerprint of the certificate in FILE (the first "
        "one, if it holds a chain), or of the certificate the server at "
        "HOST[:PORT] presents (port 50000 unless given; nothing is trusted or "
        "sent). The fingerprint goes to standard output in the sha256:HEX "
        "form that 'securemsg chat --pin' takes; a description of the "
        "certificate goes to standard error. Compare the fingerprint with "
        "the one the server's operator sees (twistd logs it at start) before "
        "you pin it."
    )
    optParameters: ClassVar[list[list[str | None]]] = []

    target: str

    def parseArgs(self, *arguments: str) -> None:
        """Take C{FILE} or C{HOST[:PORT]}, or say what is wrong."""
        self.target = one_argument(arguments, "FILE or HOST", "FILE | HOST[:PORT]")

    def run(self, stdout: TextIO) -> int:
        certificate = self._certificate()
        stdout.write(certs.fingerprint(certificate) + "\n")
        self.stderr.write(certs.describe_certificate(certificate) + "\n")
        return 0

    def _certificate(self) -> x509.Certificate:
        if os.path.exists(self.target) or _looks_like_a_file(self.target):
            try:
                return certs.load_certificates(self.target)[0]
            except FileNotFoundError:
                raise CommandError(f"{self.target}: no such file") from None
            except OSError as error:
                raise CommandError(
                    f"cannot read {self.target}: {describe_os_error(error)}"
                ) from None
            except ValueError as error:
                # load_certificates already names the file.
                raise CommandError(str(error)) from None
        try:
            host, port = split_address(self.target)
        except ValueError as error:
            raise CommandError(
                f"{self.target} is neither a file nor HOST[:PORT]: {error}", 2
            ) from None
        return server_certificate(host, port)


def _looks_like_a_file(target: str) -> bool:
    """A path with a folder in it, or a certificate's usual file name."""
    return os.sep in target or target.lower().endswith((".pem", ".crt", ".cer"))
