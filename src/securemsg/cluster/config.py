# -*- test-case-name: tests.test_cluster_redis,tests.test_cluster_tls -*-
"""
The C{--cluster} settings: where Redis is, how to log in, and a check
that it answers, made before the server starts.  (Imports no Redis
client: txredisapi is needed only to run a node.)
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

#: Where the Redis password may come from besides a file.
PASSWORD_ENVIRONMENT_VARIABLE = "SECUREMSG_CLUSTER_PASSWORD"  # noqa: S105


class ClusterError(Exception):
    """A C{--cluster} setting that cannot work, in one line."""


@dataclass(frozen=True)
class RedisConfig:
    """
    Where Redis is and how to log in, from C{--cluster} and its friends.

    @ivar ca_certificates: the certificates of C{ca_path}, read when the
        options are (before twistd drops privileges): all of them are
        trusted, by the check at start and by the node's connections alike.
    """

    host: str
    port: int
    db: int
    password: str | None
    tls: bool
    ca_path: str | None
    name: str
    claim_ttl: float
    ca_certificates: tuple[x509.Certificate, ...] = ()

    def where(self) -> str:
        """Redis' address, for messages (never the password)."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


def parse_cluster_url(
    url: str,
    *,
    name: str = "securemsg",
    ca_path: str | None = None,
    password_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    claim_ttl: float = 15.0,
) -> RedisConfig:
    """
    Read C{redis://[:password@]host[:port][/db]} (or C{rediss://}, TLS).
    The password comes from C{password_file} if given, else the
    environment variable L{PASSWORD_ENVIRONMENT_VARIABLE}, else the URL.
    The CA certificates of C{ca_path} are read here too.

    @raise ClusterError: if something is wrong with them.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ClusterError(f"--cluster {url!r}: give redis://HOST:PORT/DB or rediss://")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ClusterError(f"--cluster {url!r}: the port is not a number") from None
    if not parts.hostname:
        raise ClusterError(f"--cluster {url!r}: no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ClusterError(f"--cluster {url!r}: the database must be a number")
    if ca_path is not None and parts.scheme != "rediss":
        raise ClusterError("--cluster-ca needs a rediss:// URL (TLS to Redis)")
    if not name or any(c.isspace() for c in name):
        raise ClusterError("--cluster-name must be a word")
    password = unquote(parts.password) if parts.password else None
    environ = os.environ if environ is None else environ
    if password_file is not None:
        try:
            lines = Path(password_file).read_text().splitlines()
        except OSError as error:
            raise ClusterError(
                f"--cluster-password-file {password_file}: {error.strerror}"
            ) from None
        password = lines[0] if lines else ""
    elif environ.get(PASSWORD_ENVIRONMENT_VARIABLE):
        password = environ[PASSWORD_ENVIRONMENT_VARIABLE]
    ca_certificates = () if ca_path is None else _read_ca(ca_path)
    return RedisConfig(
        host=parts.hostname,
        port=port,
        db=int(path or 0),
        password=password,
        tls=parts.scheme == "rediss",
        ca_path=ca_path,
        name=name,
        claim_ttl=claim_ttl,
        ca_certificates=ca_certificates,
    )


def _read_ca(path: str) -> tuple[x509.Certificate, ...]:
    """Every certificate in the PEM file C{path} (a CA, or a bundle of them)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ClusterError(f"--cluster-ca {path}: {error.strerror}") from None
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise ClusterError(f"--cluster-ca {path}: no PEM certificate in it") from None


def _command(*words: str) -> bytes:
    encoded = [word.encode("utf-8") for word in words]
    return f"*{len(encoded)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(word), word) for word in encoded
    )


def probe(config: RedisConfig, timeout: float = 5.0) -> None:
    """
    Check, before the server starts, that Redis answers and takes the
    password and database: blocking, once, so that a wrong setting is one
    clear line and a non-zero exit instead of a server that starts alone.

    @raise ClusterError: if it does not.
    """
    try:
        sock: socket.socket = socket.create_connection(
            (config.host, config.port), timeout=timeout
        )
    except OSError as error:
        raise ClusterError(
            f"cannot reach Redis at {config.where()}: {error.strerror or error}"
        ) from None
    try:
        if config.tls:
            sock = _tls_handshake(sock, config)
        words: list[tuple[str, ...]] = [("PING",)]
        if config.password is not None:
            words.insert(0, ("AUTH", config.password))
        if config.db:
            words.append(("SELECT", str(config.db)))
        for command in words:
            sock.sendall(_command(*command))
            reply = sock.recv(4096)
            if not reply:
                # What a TLS port does with a plain command.
                hint = "" if config.tls else " (does it want TLS: rediss://?)"
                raise ClusterError(
                    f"Redis at {config.where()} closed the connection at"
                    f" {command[0]}{hint}"
                )
            if not reply.startswith(b"+"):
                what = reply.decode("utf-8", "replace").strip().lstrip("-")
                raise ClusterError(
                    f"Redis at {config.where()} refused {command[0]}: {what}"
                )
    except (OSError, ssl.SSLError) as error:
        raise ClusterError(f"cannot use Redis at {config.where()}: {error}") from None
    finally:
        sock.close()


#: OpenSSL's verify codes for a certificate that names another host.
_NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_


def _tls_handshake(sock: socket.socket, config: RedisConfig) -> ssl.SSLSocket:
    """
    Run the TLS handshake on C{sock}, checking Redis' certificate as the
    node's own connections will: its chain up to C{--cluster-ca} (or the
    system's CAs) and the host name of C{--cluster}.

    @raise ClusterError: if the handshake fails, saying why in one line.
    """
    # Checks the chain and the host name (or IP address) by default; with
    # no --cluster-ca, against the system's CAs.
    bundle = "".join(
        c.public_bytes(Encoding.PEM).decode("ascii") for c in config.ca_certificates
    )
    context = ssl.create_default_context(cadata=bundle or None)
    try:
        return context.wrap_socket(sock, server_hostname=config.host)
    except ssl.SSLCertVerificationError as error:
        raise ClusterError(
            certificate_problem(
                config,
                error.verify_message.rstrip("."),
                name_mismatch=error.verify_code in _NAME_MISMATCH,
            )
        ) from None
    except TimeoutError:
        raise ClusterError(
            no_tls_problem(config, "no answer to the handshake")
        ) from None
    except (OSError, ssl.SSLError) as error:
        detail = getattr(error, "reason", None) or error.strerror or str(error)
        raise ClusterError(no_tls_problem(config, detail)) from None


def certificate_problem(
    config: RedisConfig, detail: str, *, name_mismatch: bool
) -> str:
    """
    One line saying that Redis' certificate failed the check (C{detail}),
    and what to look at: its names if C{name_mismatch}, else its CA.
    """
    if name_mismatch:
        hint = f"it must name {config.host}, the host of --cluster"
    elif config.ca_path is not None:
        hint = f"is it signed by the CA in --cluster-ca {config.ca_path}?"
    else:
        hint = "give the CA that signs it with --cluster-ca"
    return (
        f"Redis' certificate at {config.where()} does not check out: {detail} ({hint})"
    )


def no_tls_problem(config: RedisConfig, detail: str) -> str:
    """One line saying that the TLS handshake with Redis failed (C{detail})."""
    return (
        f"no TLS with Redis at {config.where()}: {detail} (does Redis speak TLS"
        f" on port {config.port}?)"
    )
