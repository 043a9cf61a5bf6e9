"""
Tests for L{securemsg.server.reload}: certificate changes without downtime.

The reloader is checked with files in a temporary folder and real TLS
handshakes in memory (what certificate does a new client see?); the
service with a fake clock; and the whole of it in a real C{twistd}
subprocess, reloading on SIGHUP and on an operator's C{/reload} while
clients stay connected.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from OpenSSL._util import lib as openssl_lib
from twisted.internet import reactor as _global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import ClientFactory
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase, TestCase

from securemsg.admin import ca
from securemsg.client.trust import load_client_certificate
from securemsg.server.factory import ChatServerFactory
from securemsg.server.reload import (
    EXPIRY_CHECK_INTERVAL,
    SESSION_KEY_LIFETIME,
    WATCH_INTERVAL,
    CertificateReloader,
    ExpiryWarningService,
    ReloadService,
    SessionKeyService,
)
from securemsg.tls import certs
from securemsg.tls import policy as tls
from securemsg.tls.policy import (
    PASSPHRASE_ENVIRONMENT_VARIABLE,
    PassphraseSource,
    ServerTLS,
    TLSSettings,
    load_tls,
)

from . import _certs
from ._loopback import LineClient, bounded, connect_line_client, greeting
from ._tls import LineCollector, RawClientTLS, raw_client, tls_pair
from ._twistd import Twistd, listening_port, start_twistd, stop_with_sigterm

reactor: Any = _global_reactor

PASSPHRASE = b"correct horse battery staple"


def describe(certificate: x509.Certificate) -> str:
    """How the reloader names a certificate in its messages."""
    expires = certificate.not_valid_after_utc
    return f"{certs.fingerprint(certificate)} (expires {expires:%Y-%m-%d %H:%M} UTC)"


def messages(events: Sequence[LogEvent], level: LogLevel) -> list[str]:
    """The formatted log messages of C{level} among C{events}."""
    return [formatEvent(event) for event in events if event["log_level"] == level]


class ReloaderCase(SynchronousTestCase):
    """
    A reloader serving certificate A (from the shared test CA) out of
    C{server.pem} and C{server.key} in a temporary folder.
    """

    passphrases = PassphraseSource()

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.ca, self.a = _certs.default_ca_and_server()
        self.cert_path, self.key_path = self.install(self.a)
        self.settings = self.make_settings()
        self.reloader = self.make_reloader()
        self.old_context = self.reloader.creator.context

    def make_settings(self, **changes: Any) -> TLSSettings:
        return TLSSettings(
            self.cert_path, self.key_path, passphrases=self.passphrases, **changes
        )

    def make_reloader(self, now: datetime | None = None) -> CertificateReloader:
        loaded = load_tls(self.settings)
        creator = ServerTLS(loaded.context)
        if now is None:
            return CertificateReloader(self.settings, creator, loaded)
        return CertificateReloader(self.settings, creator, loaded, lambda: now)

    def install(
        self, pair: _certs.Pair, passphrase: bytes | None = None
    ) -> tuple[str, str]:
        """
        Put C{pair} in the served files as an operator would: a new file
        renamed over the old one.
        """
        for name, data in [
            ("server.key", pair.key_pem(passphrase)),
            ("server.pem", pair.cert_pem()),
        ]:
            new = self.directory / f".{name}.new"
            new.write_bytes(data)
            new.chmod(0o600)
            os.replace(new, self.directory / name)
        return str(self.directory / "server.pem"), str(self.directory / "server.key")

    def handshake(
        self, client_certificate: PrivateCertificate | None = None
    ) -> tuple[LineCollector, Any, Any]:
        """
        A new client (trusting the test CA) connected in memory to a chat
        server that uses the reloader's connection creator.

        @return: the client, its TLS transport and the pump.
        """
        clock = Clock()
        server_factory = TLSMemoryBIOFactory(
            self.reloader.creator,
            False,
            ChatServerFactory.standalone(clock),
            clock=clock,
        )
        collector = LineCollector()
        options = optionsForClientTLS(
            "localhost",
            trustRoot=Certificate.loadPEM(self.ca.cert_pem()),
            clientCertificate=client_certificate,
        )
        client_factory = TLSMemoryBIOFactory(
            options, True, ClientFactory.forProtocol(lambda: collector), clock=clock
        )
        address = IPv4Address("TCP", "127.0.0.1", 50000)
        client_tls, _, pump = connectedServerAndClient(
            lambda: server_factory.buildProtocol(address),
            lambda: client_factory.buildProtocol(address),
            greet=False,
            clock=clock,
        )
        pump.flush()
        return collector, client_tls, pump

    def served(self) -> str:
        """The fingerprint of the certificate a new client is shown."""
        collector, client_tls, _ = self.handshake()
        self.assertEqual(collector.received, [greeting("guest-1")])
        return certs.fingerprint(client_tls.getPeerCertificate().to_cryptography())

    def assertKeptOld(self, result: tuple[bool, str], problem: str) -> None:
        """
        The reload failed with C{problem}; certificate A is still what new
        clients get.
        """
        self.assertEqual(
            result, (False, f"reload failed, the current certificate stays: {problem}")
        )
        self.assertIs(self.reloader.creator.context, self.old_context)
        self.assertEqual(
            self.reloader.current.credentials.certificate, self.a.certificate
        )
        self.assertEqual(self.served(), certs.fingerprint(self.a.certificate))

    def reload_failing(self, problem: str) -> None:
        """Reload, which fails with C{problem}, logged as an error."""
        with capturedLogs() as events:
            result = self.reloader.reload("test")
        self.assertKeptOld(result, problem)
        self.assertEqual(
            messages(events, LogLevel.error),
            [
                f"certificate reload (test) failed; still serving"
                f" {describe(self.a.certificate)}: {problem}"
            ],
        )


class ReloaderTests(ReloaderCase):
    """
    L{CertificateReloader} puts a new certificate in service only once all
    of it checks out.
    """

    def test_new_pair_served(self) -> None:
        """
        A good new certificate and key replace the context, and a handshake
        made after the reload shows the new certificate.
        """
        self.assertEqual(self.served(), certs.fingerprint(self.a.certificate))
        b = _certs.issue(self.ca)
        self.install(b)
        with capturedLogs() as events:
            result = self.reloader.reload("test")
        self.assertEqual(
            result, (True, f"reloaded: now serving {describe(b.certificate)}")
        )
        self.assertIsNot(self.reloader.creator.context, self.old_context)
        self.assertEqual(self.reloader.current.credentials.certificate, b.certificate)
        self.assertEqual(self.served(), certs.fingerprint(b.certificate))
        self.assertEqual(
            messages(events, LogLevel.info),
            [
                f"certificates reloaded (test): {describe(self.a.certificate)}"
                f" -> {describe(b.certificate)}"
            ],
        )

    def test_connections_made_before_stay(self) -> None:
        """A connection made before the reload goes on as it was."""
        before, before_tls, pump = self.handshake()
        self.install(_certs.issue(self.ca))
        self.assertTrue(self.reloader.reload("test")[0])
        before.sendLine(b"/ping")
        pump.flush()
        self.assertEqual(before.received, [greeting("guest-1"), "*** pong"])
        self.assertIsNone(before.lost)
        self.assertEqual(
            before_tls.getPeerCertificate().to_cryptography(), self.a.certificate
        )

    def test_garbage_key(self) -> None:
        """A key file that holds no key leaves the old certificate in service."""
        self.install(_certs.issue(self.ca))
        Path(self.key_path).write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n")
        self.reload_failing(f"{self.key_path} does not hold a usable PEM private key")

    def test_key_of_another_certificate(self) -> None:
        """A key that does not match the new certificate leaves the old one."""
        b, c = _certs.issue(self.ca), _certs.issue(self.ca)
        self.install(b)
        Path(self.key_path).write_bytes(c.key_pem())
        self.reload_failing(
            f"private key {self.key_path} does not match certificate {self.cert_path}"
        )

    def test_half_installed(self) -> None:
        """
        A new certificate beside the old key (caught between the two copies)
        does not match, so nothing changes.
        """
        Path(self.cert_path).write_bytes(_certs.issue(self.ca).cert_pem())
        self.reload_failing(
            f"private key {self.key_path} does not match certificate {self.cert_path}"
        )

    def test_missing_key(self) -> None:
        """A key file that went away leaves the old certificate in service."""
        os.remove(self.key_path)
        self.reload_failing(f"private key file {self.key_path} not found")

    def assertStartRefuses(self, problem: str) -> None:
        """A start with the files installed now stops with C{problem} too."""
        error = self.assertRaises(tls.TLSConfigError, load_tls, self.settings)
        self.assertEqual(str(error), problem)

    def test_expired(self) -> None:
        """
        An expired new certificate is refused by a reload, as by a start
        (clients refuse it anyway).
        """
        expired = _certs.issue(self.ca, days_valid=(-10, -1))
        self.install(expired)
        when = expired.certificate.not_valid_after_utc
        problem = (
            f"certificate {self.cert_path} expired on {when:%Y-%m-%d %H:%M} UTC"
            " (1 day ago)"
        )
        self.assertStartRefuses(problem)
        self.reload_failing(problem)

    def test_not_yet_valid(self) -> None:
        """A certificate that is not valid yet is refused."""
        early = _certs.issue(self.ca, days_valid=(1, 30))
        self.install(early)
        when = early.certificate.not_valid_before_utc
        problem = (
            f"certificate {self.cert_path} is not valid until"
            f" {when:%Y-%m-%d %H:%M} UTC; check the system clock, or wait"
        )
        self.assertStartRefuses(problem)
        self.reload_failing(problem)

    def test_no_subject_alt_name(self) -> None:
        """
        A certificate without a SubjectAltName, which clients refuse, is
        refused, as by a start.
        """
        self.install(_certs.issue(self.ca, []))
        problem = (
            f"certificate {self.cert_path} has no subjectAltName; modern TLS"
            " clients ignore the common name and refuse it for every host name"
            " (make one with: securemsg gencert --host NAME)"
        )
        self.assertStartRefuses(problem)
        self.reload_failing(problem)

    def test_fixed_after_failure(self) -> None:
        """After a failed reload, a reload with good files works."""
        Path(self.key_path).write_bytes(b"garbage")
        self.assertFalse(self.reloader.reload("test")[0])
        b = _certs.issue(self.ca)
        self.install(b)
        self.assertTrue(self.reloader.reload("test")[0])
        self.assertEqual(self.served(), certs.fingerprint(b.certificate))


class EncryptedKeyTests(ReloaderCase):
    """An encrypted key is opened again with the passphrase source used at start."""

    passphrases = PassphraseSource(
        environ={PASSPHRASE_ENVIRONMENT_VARIABLE: PASSPHRASE.decode()}
    )

    def install(
        self, pair: _certs.Pair, passphrase: bytes | None = PASSPHRASE
    ) -> tuple[str, str]:
        return super().install(pair, passphrase)

    def test_same_passphrase(self) -> None:
        """A new key encrypted with the same passphrase is loaded."""
        b = _certs.issue(self.ca)
        self.install(b)
        self.assertTrue(self.reloader.reload("test")[0])
        self.assertEqual(self.served(), certs.fingerprint(b.certificate))

    def test_other_passphrase(self) -> None:
        """A new key with another passphrase is refused."""
        self.install(_certs.issue(self.ca), b"another passphrase")
        self.reload_failing(
            f"wrong passphrase for private key {self.key_path} (or the file is damaged)"
        )

    def test_typed_passphrase_remembered(self) -> None:
        """
        A passphrase typed at start is remembered: a reload (when nobody is
        at the terminal any more) does not ask again.
        """
        asked: list[str] = []

        def ask(prompt: str) -> str:
            asked.append(prompt)
            return PASSPHRASE.decode()

        class Terminal:
            def isatty(self) -> bool:
                return True

        self.patch(sys, "stdin", Terminal())
        self.patch(tls, "getpass", ask)
        self.patch(os, "environ", {})
        self.passphrases = PassphraseSource.from_process()
        self.settings = self.make_settings()
        self.reloader = self.make_reloader()
        b = _certs.issue(self.ca)
        self.install(b)
        self.assertTrue(self.reloader.reload("test")[0])
        self.assertEqual(asked, [f"Passphrase for {self.key_path}: "])


class ClientCATests(ReloaderCase):
    """The client CA and its revocation list are reloaded too."""

    def setUp(self) -> None:
        super().setUp()
        self.ca_directory = self.directory / "client-ca"
        ca.init_ca(self.ca_directory)
        self.carol = ca.issue(self.ca_directory, "carol")
        paths = ca.ca_paths(self.ca_directory)
        self.crl_path = paths.crl
        self.settings = self.make_settings(
            client_ca_path=paths.certificate, client_auth="optional", crl_path=paths.crl
        )
        self.reloader = self.make_reloader()
        self.old_context = self.reloader.creator.context

    def test_revocation_takes_effect(self) -> None:
        """
        A certificate revoked after start is refused once the new CRL is
        reloaded, not before.
        """
        carol = load_client_certificate(self.carol.cert_path, self.carol.key_path)
        self.assertEqual(self.handshake(carol)[0].received, [greeting("carol")])
        ca.revoke(self.ca_directory, "carol")
        self.assertEqual(self.handshake(carol)[0].received, [greeting("carol")])
        self.assertTrue(self.reloader.reload("test")[0])
        refused = self.handshake(carol)[0]
        self.assertEqual(refused.received, [])
        assert refused.lost is not None
        self.assertIn("certificate revoked", str(refused.lost.value))

    def test_renewal_keeps_the_checks(self) -> None:
        """
        The daily renewal of the session ticket keys keeps the client CA and
        the revocation list in service: a certificate revoked (and the
        revocation reloaded) stays refused.
        """
        carol = load_client_certificate(self.carol.cert_path, self.carol.key_path)
        ca.revoke(self.ca_directory, "carol")
        self.assertTrue(self.reloader.reload("test")[0])
        self.reloader.renew_session_keys()
        self.assertIsNot(self.reloader.creator.context, self.old_context)
        refused = self.handshake(carol)[0]
        self.assertEqual(refused.received, [])
        assert refused.lost is not None
        self.assertIn("certificate revoked", str(refused.lost.value))

    def test_client_ca_not_a_ca(self) -> None:
        """
        A client CA file replaced by a certificate that is not a CA (a
        client's own) is refused; the old CA stays in service.
        """
        paths = ca.ca_paths(self.ca_directory)
        Path(paths.certificate).write_bytes(Path(self.carol.cert_path).read_bytes())
        self.reload_failing(
            f"client CA {paths.certificate} (CN=carol) is not a CA (no"
            " basicConstraints CA:TRUE): give the certificate of the CA that"
            " issues client certificates (made with: securemsg ca init DIR,"
            " which writes DIR/ca.pem)"
        )

    def test_crl_of_another_ca(self) -> None:
        """
        A CRL replaced by one another CA of the same name signed (the CA
        made again elsewhere) is refused; the old CRL stays in service.
        """
        other = self.directory / "other-ca"
        ca.init_ca(other)
        Path(self.crl_path).write_bytes(Path(ca.ca_paths(other).crl).read_bytes())
        client_ca = ca.ca_paths(self.ca_directory).certificate
        self.reload_failing(
            f"CRL {self.crl_path} names CN={ca.DEFAULT_CA_NAME} as its issuer, but"
            f" that CA's key in {client_ca} did not sign it (was the CA made again?)"
        )

    def test_expired_crl(self) -> None:
        """
        A CRL past its nextUpdate (with which OpenSSL would refuse every
        client certificate) is refused.
        """
        signed = datetime.now(UTC) - timedelta(days=40)
        crl = ca.refresh_crl(self.ca_directory, now=signed)
        next_update = crl.next_update_utc
        assert next_update is not None
        self.reload_failing(
            f"CRL {self.crl_path} expired on {next_update:%Y-%m-%d %H:%M} UTC; every"
            " client certificate would be refused: re-sign it with: securemsg ca"
            " crl DIR"
        )


class ServiceClock(Clock):
    """A fake reactor's time, and its C{callFromThread} (run at once)."""

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class ReloadServiceTests(ReloaderCase):
    """
    L{ReloadService} reloads on SIGHUP and when the files change.
    """

    def start(
        self, watch: bool = True, now: datetime | None = None
    ) -> tuple[ReloadService, ServiceClock]:
        if now is not None:
            self.reloader = self.make_reloader(now)
            self.old_context = self.reloader.creator.context
        clock = ServiceClock()
        service = ReloadService(self.reloader, clock, watch=watch)
        previous = signal.getsignal(signal.SIGHUP)
        service.startService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), service._on_sighup)
        self.addCleanup(
            lambda: self.assertIs(signal.getsignal(signal.SIGHUP), previous)
        )
        self.addCleanup(service.stopService)
        return service, clock

    def test_sighup(self) -> None:
        """
        While the service runs, SIGHUP reloads (the handler hands the work
        to the reactor); when it stops, the previous handler is back.
        """
        self.start()
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        b = _certs.issue(self.ca)
        self.install(b)
        with capturedLogs() as events:
            handler(signal.SIGHUP, None)
        self.assertEqual(self.served(), certs.fingerprint(b.certificate))
        self.assertEqual(
            messages(events, LogLevel.info),
            [
                f"certificates reloaded (SIGHUP): {describe(self.a.certificate)}"
                f" -> {describe(b.certificate)}"
            ],
        )

    def test_changed_files_reload(self) -> None:
        """
        With C{--watch-certs}, a changed certificate file is reloaded at the
        next look, once.
        """
        _, clock = self.start()
        b = _certs.issue(self.ca)
        self.install(b)
        with capturedLogs() as events:
            clock.advance(WATCH_INTERVAL)
            clock.advance(WATCH_INTERVAL)
        self.assertEqual(self.reloader.current.credentials.certificate, b.certificate)
        self.assertEqual(
            messages(events, LogLevel.info),
            [
                f"certificates reloaded (files changed): {describe(self.a.certificate)}"
                f" -> {describe(b.certificate)}"
            ],
        )

    def test_unchanged_files(self) -> None:
        """Files that did not change are not reloaded."""
        _, clock = self.start()
        with capturedLogs() as events:
            for _ in range(3):
                clock.advance(WATCH_INTERVAL)
        self.assertIs(self.reloader.creator.context, self.old_context)
        self.assertEqual(list(events), [])

    def test_not_watching(self) -> None:
        """Without C{--watch-certs}, changed files wait for SIGHUP or /reload."""
        _, clock = self.start(watch=False)
        self.install(_certs.issue(self.ca))
        clock.advance(WATCH_INTERVAL * 3)
        self.assertIs(self.reloader.creator.context, self.old_context)

    def test_bad_change_tried_once(self) -> None:
        """
        A change that cannot be loaded is logged once, not at every look;
        the next change is loaded.
        """
        _, clock = self.start()
        Path(self.key_path).write_bytes(b"garbage")
        with capturedLogs() as events:
            for _ in range(3):
                clock.advance(WATCH_INTERVAL)
        self.assertEqual(len(messages(events, LogLevel.error)), 1)
        self.assertIs(self.reloader.creator.context, self.old_context)
        b = _certs.issue(self.ca)
        self.install(b)
        clock.advance(WATCH_INTERVAL)
        self.assertEqual(self.reloader.current.credentials.certificate, b.certificate)

    def test_unreadable_file_warned_at_start(self) -> None:
        """
        A file this process cannot read (after twistd dropped privileges)
        is warned about at start: a reload would fail.
        """
        os.remove(self.key_path)
        with capturedLogs() as events:
            self.start()
        self.assertEqual(
            messages(events, LogLevel.warn),
            [
                f"{self.key_path} cannot be read by this process (uid {os.getuid()});"
                " certificate reloads will fail until it can (twistd --uid/--gid"
                " drop privileges after start)"
            ],
        )


class ExpiryWarningServiceTests(ReloaderCase):
    """
    L{ExpiryWarningService} warns each day while the certificate in service
    is close to expiry.
    """

    def start(self, now: datetime) -> ServiceClock:
        self.reloader = self.make_reloader(now)
        clock = ServiceClock()
        service = ExpiryWarningService(self.reloader, clock)
        service.startService()
        self.addCleanup(service.stopService)
        return clock

    def test_expiry_warning(self) -> None:
        """
        Each day, while the certificate in service expires within 14 days,
        a warning is logged.
        """
        expires = self.a.certificate.not_valid_after_utc
        clock = self.start(expires - timedelta(days=9, hours=12))
        with capturedLogs() as events:
            clock.advance(EXPIRY_CHECK_INTERVAL)
            clock.advance(EXPIRY_CHECK_INTERVAL)
        warning = (
            f"certificate {self.cert_path} expires in 9 days, on"
            f" {expires:%Y-%m-%d %H:%M} UTC; renew it"
        )
        self.assertEqual(messages(events, LogLevel.warn), [warning, warning])

    def test_no_expiry_warning(self) -> None:
        """A certificate with more than 14 days left gives no warning."""
        expires = self.a.certificate.not_valid_after_utc
        clock = self.start(expires - timedelta(days=15))
        with capturedLogs() as events:
            clock.advance(EXPIRY_CHECK_INTERVAL)
        self.assertEqual(list(events), [])


class SessionKeyTests(ReloaderCase):
    """
    L{CertificateReloader.renew_session_keys} and L{SessionKeyService}:
    new TLS session ticket keys each day, the same certificate.
    """

    def resumed(self, client: RawClientTLS) -> bool:
        """Whether C{client} resumes its session on a new connection."""
        collector, server_tls, _, _ = tls_pair(self.reloader.creator.context, client)
        self.assertTrue(collector.handshake_done)
        return bool(openssl_lib.SSL_session_reused(server_tls.getHandle()._ssl))

    def session_client(self, maximum: int | None = None) -> RawClientTLS:
        """
        A client that has made a session with the context in service (with
        TLS 1.2 at most if C{maximum} says so).
        """
        first = raw_client(maximum)
        collector, _, _, _ = tls_pair(self.reloader.creator.context, first)
        self.assertTrue(collector.handshake_done)
        # Kept to the end of the test: OpenSSL marks the session of a client
        # connection freed without a TLS shutdown as not to be resumed, and
        # the garbage collector would free it at any time.
        self.addCleanup(lambda: first)
        return RawClientTLS(first.context, first.connections[0].get_session())

    def test_renewed(self) -> None:
        """
        After a renewal, new handshakes get a new context of the same
        certificate: a session made before no longer resumes, and one made
        after does.  (A new context has new ticket keys and a session ID
        context of its own; either refuses the old session.  What the keys
        are, the binding cannot tell.)
        """
        before = self.session_client()
        self.assertTrue(self.resumed(before))
        with capturedLogs() as events:
            self.reloader.renew_session_keys()
        self.assertIsNot(self.reloader.creator.context, self.old_context)
        self.assertIs(self.reloader.current.context, self.reloader.creator.context)
        self.assertEqual(
            self.reloader.current.credentials.certificate, self.a.certificate
        )
        self.assertEqual(self.served(), certs.fingerprint(self.a.certificate))
        self.assertFalse(self.resumed(before))
        self.assertTrue(self.resumed(self.session_client()))
        self.assertEqual(
            messages(events, LogLevel.info), ["TLS session ticket keys renewed"]
        )

    def test_renewed_tls12(self) -> None:
        """
        The same for TLS 1.2, whose tickets hold the session's master
        secret (the reason for renewing).
        """
        before = self.session_client(SSL.TLS1_2_VERSION)
        self.assertTrue(self.resumed(before))
        self.reloader.renew_session_keys()
        self.assertFalse(self.resumed(before))
        self.assertTrue(self.resumed(self.session_client(SSL.TLS1_2_VERSION)))

    def test_unexpected_failure_keeps_old(self) -> None:
        """
        Any other error making the new context keeps the old one too, is
        logged with its traceback, and the daily renewal goes on.
        """

        def broken(context: object) -> bytes:
            raise RuntimeError("broken")

        clock = ServiceClock()
        service = SessionKeyService(self.reloader, clock)
        service.startService()
        self.addCleanup(service.stopService)
        working = tls.set_groups
        self.patch(tls, "set_groups", broken)
        with capturedLogs() as events:
            clock.advance(SESSION_KEY_LIFETIME)
        self.assertIs(self.reloader.creator.context, self.old_context)
        [event] = [e for e in events if e["log_level"] == LogLevel.critical]
        self.assertEqual(
            formatEvent(event),
            "TLS session ticket keys not renewed; the old ones stay",
        )
        self.assertIsInstance(event["log_failure"].value, RuntimeError)
        self.flushLoggedErrors(RuntimeError)
        self.patch(tls, "set_groups", working)
        clock.advance(SESSION_KEY_LIFETIME)
        self.assertIsNot(self.reloader.creator.context, self.old_context)

    def test_files_not_read(self) -> None:
        """
        A renewal does not read the files again: one that changed (or
        broke) on disk waits for a reload.
        """
        self.install(_certs.issue(self.ca))
        Path(self.key_path).write_bytes(b"not a key")
        self.reloader.renew_session_keys()
        self.assertIsNot(self.reloader.creator.context, self.old_context)
        self.assertEqual(self.served(), certs.fingerprint(self.a.certificate))

    def test_failure_keeps_old(self) -> None:
        """If the new context cannot be made, the old one stays, said."""

        def refuse(context: object) -> bytes:
            raise tls.TLSConfigError("no group list")

        self.patch(tls, "set_groups", refuse)
        with capturedLogs() as events:
            self.reloader.renew_session_keys()
        self.assertIs(self.reloader.creator.context, self.old_context)
        self.assertEqual(
            messages(events, LogLevel.error),
            ["TLS session ticket keys not renewed; the old ones stay: no group list"],
        )

    def test_service_renews_daily(self) -> None:
        """L{SessionKeyService} renews once a day, not at start."""
        clock = ServiceClock()
        service = SessionKeyService(self.reloader, clock)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertIs(self.reloader.creator.context, self.old_context)
        clock.advance(SESSION_KEY_LIFETIME - 1)
        self.assertIs(self.reloader.creator.context, self.old_context)
        clock.advance(1)
        first = self.reloader.creator.context
        self.assertIsNot(first, self.old_context)
        clock.advance(SESSION_KEY_LIFETIME)
        self.assertIsNot(self.reloader.creator.context, first)
        service.stopService()
        last = self.reloader.creator.context
        clock.advance(SESSION_KEY_LIFETIME)
        self.assertIs(self.reloader.creator.context, last)


class RevocationWarningTests(ReloaderCase):
    """
    The start (and each reload) warns when client certificates are checked
    without a CRL: revoking one would change nothing.  The warning is the
    one C{securemsg check} prints.
    """

    def setUp(self) -> None:
        super().setUp()
        self.ca_directory = self.directory / "client-ca"
        ca.init_ca(self.ca_directory)
        self.paths = ca.ca_paths(self.ca_directory)

    def warnings_at_start(self, settings: TLSSettings) -> list[str]:
        self.settings = settings
        with capturedLogs() as events:
            service = ReloadService(self.make_reloader(), ServiceClock())
            service.startService()
        self.addCleanup(service.stopService)
        return messages(events, LogLevel.warn)

    def test_client_ca_without_crl(self) -> None:
        """--client-ca without --crl is warned about, naming the CA file."""
        warnings = self.warnings_at_start(
            self.make_settings(client_ca_path=self.paths.certificate)
        )
        self.assertEqual(
            warnings,
            [
                f"client CA {self.paths.certificate} given without a CRL (--crl):"
                " the server would accept revoked client certificates (give the"
                " CA's crl.pem with --crl)"
            ],
        )

    def test_with_crl_or_without_client_ca(self) -> None:
        """With a CRL, or without client certificates, nothing is said."""
        for settings in (
            self.make_settings(
                client_ca_path=self.paths.certificate, crl_path=self.paths.crl
            ),
            self.make_settings(),
        ):
            self.assertEqual(self.warnings_at_start(settings), [])


# ---------------------------------------------------------------------------
# In a real twistd


class TwistdReloadTests(TestCase):
    """
    C{twistd -n securemsg} reloads its certificate on SIGHUP and on an
    operator's C{/reload}, while connected clients go on chatting.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.ca, self.a = _certs.default_ca_and_server()
        self.b = _certs.issue(self.ca)
        self.cert_path, self.key_path = self.a.write(self.directory)

    def start(self, *arguments: str) -> Twistd:
        """Start twistd serving C{server.pem}, on an ephemeral loopback port."""
        return start_twistd(
            self,
            self.directory,
            "--cert", self.cert_path,
            "--key", self.key_path,
            "--listen", "tcp:0:interface=127.0.0.1",
            "--history-db", ":memory:",
            "--history-replay", "0",
            "--state", str(self.directory / "state.json"),
            *arguments,
        )  # fmt: skip

    async def connect(
        self, twistd: Twistd, certificate: PrivateCertificate | None = None
    ) -> LineClient:
        """A TLS client that trusts the test CA, once the handshake is done."""
        client = await connect_line_client(
            await listening_port(twistd), self.ca.cert_pem(), certificate
        )
        self.addCleanup(self.close_client, client)
        await bounded(client.handshake.wait(), "the TLS handshake")
        return client

    async def close_client(self, client: LineClient) -> None:
        if not client.ended.fired:
            transport: Any = client.transport
            transport.abortConnection()
        await client.wait_closed()

    def served(self, client: LineClient) -> str:
        """The fingerprint of the certificate C{client} was shown."""
        transport: Any = client.transport
        return certs.fingerprint(transport.getPeerCertificate().to_cryptography())

    async def terminate(self, twistd: Twistd, *clients: LineClient) -> None:
        """
        SIGTERM stops twistd cleanly, telling each client, without a
        traceback.
        """
        await stop_with_sigterm(self, twistd)
        for client in clients:
            await client.wait_closed()
            self.assertEqual(client.unread, ["*** the server is shutting down"])
        self.assertEqual(twistd.err, b"")

    async def test_sighup(self) -> None:
        """
        SIGHUP puts a new certificate in service: connected clients go on
        chatting, a new client sees the new certificate.  A broken key then
        leaves the new certificate in service, and the log says why.
        """
        twistd = self.start()
        one = await self.connect(twistd)
        self.assertEqual(await one.next_lines(1), [greeting("guest-1")])
        two = await self.connect(twistd)
        self.assertEqual(await two.next_lines(1), [greeting("guest-2")])
        self.assertEqual(await one.next_lines(1), ["*** guest-2 joined"])
        self.assertEqual(self.served(one), certs.fingerprint(self.a.certificate))
        one.send(b"before")
        self.assertEqual(await two.next_lines(1), ["[guest-1] before"])

        self.b.write(self.directory)
        twistd.signal("HUP")
        await twistd.wait_for_message(
            re.escape(
                f"certificates reloaded (SIGHUP): {describe(self.a.certificate)}"
                f" -> {describe(self.b.certificate)}"
            )
        )
        one.send(b"still here")
        self.assertEqual(await two.next_lines(1), ["[guest-1] still here"])
        two.send(b"me too")
        self.assertEqual(await one.next_lines(1), ["[guest-2] me too"])
        three = await self.connect(twistd)
        self.assertEqual(self.served(three), certs.fingerprint(self.b.certificate))
        self.assertEqual(await three.next_lines(1), [greeting("guest-3")])
        for other in (one, two):
            self.assertEqual(await other.next_lines(1), ["*** guest-3 joined"])
        self.assertEqual(self.served(one), certs.fingerprint(self.a.certificate))

        Path(self.key_path).write_bytes(b"garbage")
        twistd.signal("HUP")
        await twistd.wait_for_message(
            re.escape(
                f"certificate reload (SIGHUP) failed; still serving"
                f" {describe(self.b.certificate)}: {self.key_path} does not hold a"
                " usable PEM private key"
            )
        )
        four = await self.connect(twistd)
        self.assertEqual(self.served(four), certs.fingerprint(self.b.certificate))
        self.assertEqual(await four.next_lines(1), [greeting("guest-4")])
        for other in (one, two, three):
            self.assertEqual(await other.next_lines(1), ["*** guest-4 joined"])
        one.send(b"after all that")
        for other in (two, three, four):
            self.assertEqual(await other.next_lines(1), ["[guest-1] after all that"])
        await self.terminate(twistd, one, two, three, four)

    async def test_operator_reload(self) -> None:
        """
        With mutual TLS, the operator alice reloads with C{/reload} and is
        told what is served now; bob, who is no operator, is refused.
        """
        ca_directory = self.directory / "client-ca"
        ca.init_ca(ca_directory)
        paths = ca.ca_paths(ca_directory)

        def certificate(name: str) -> PrivateCertificate:
            issued = ca.issue(ca_directory, name)
            return load_client_certificate(issued.cert_path, issued.key_path)

        twistd = self.start(
            "--client-ca", paths.certificate,
            "--crl", paths.crl,
            "--operators", "alice",
        )  # fmt: skip
        alice = await self.connect(twistd, certificate("alice"))
        self.assertEqual(await alice.next_lines(1), [greeting("alice")])
        bob = await self.connect(twistd, certificate("bob"))
        self.assertEqual(await bob.next_lines(1), [greeting("bob")])
        self.assertEqual(await alice.next_lines(1), ["*** bob joined"])

        self.b.write(self.directory)
        bob.send(b"/reload")
        self.assertEqual(
            await bob.next_lines(1),
            ["!!! permission denied: /reload is for operators"],
        )
        alice.send(b"/reload")
        self.assertEqual(
            await alice.next_lines(1),
            [f"*** reloaded: now serving {describe(self.b.certificate)}"],
        )
        await twistd.wait_for_message(
            re.escape(
                "certificates reloaded (/reload by an operator):"
                f" {describe(self.a.certificate)} -> {describe(self.b.certificate)}"
            )
        )
        carol = await self.connect(twistd, certificate("carol"))
        self.assertEqual(self.served(carol), certs.fingerprint(self.b.certificate))
        self.assertEqual(await carol.next_lines(1), [greeting("carol")])
        self.assertEqual(await bob.next_lines(1), ["*** carol joined"])
        bob.send(b"hello carol")
        self.assertEqual(await carol.next_lines(1), ["[bob] hello carol"])
        self.assertEqual(
            await alice.next_lines(2), ["*** carol joined", "[bob] hello carol"]
        )
        await self.terminate(twistd, alice, bob, carol)

    async def test_revoked_operator_disconnected(self) -> None:
        """
        An operator whose certificate is revoked while she is connected
        keeps her rights only until the reload: on SIGHUP she is
        disconnected, with a notice and a log line, bob is told, and her
        certificate no longer gets her in.
        """
        ca_directory = self.directory / "client-ca"
        ca.init_ca(ca_directory)
        paths = ca.ca_paths(ca_directory)
        issued = {name: ca.issue(ca_directory, name) for name in ("alice", "bob")}

        def certificate(name: str) -> PrivateCertificate:
            return load_client_certificate(
                issued[name].cert_path, issued[name].key_path
            )

        twistd = self.start(
            "--client-ca", paths.certificate,
            "--crl", paths.crl,
            "--operators", "alice",
        )  # fmt: skip
        alice = await self.connect(twistd, certificate("alice"))
        self.assertEqual(await alice.next_lines(1), [greeting("alice")])
        bob = await self.connect(twistd, certificate("bob"))
        self.assertEqual(await bob.next_lines(1), [greeting("bob")])
        self.assertEqual(await alice.next_lines(1), ["*** bob joined"])

        ca.revoke(ca_directory, "alice")
        alice.send(b"/motd before the reload")
        self.assertEqual(await alice.next_lines(1), ["*** motd: before the reload"])
        self.assertEqual(await bob.next_lines(1), ["*** motd: before the reload"])
        twistd.signal("HUP")
        self.assertEqual(
            await alice.next_lines(1),
            ["!!! your client certificate is no longer accepted: certificate revoked"],
        )
        await alice.wait_closed()
        self.assertEqual(
            await bob.next_lines(1),
            ["*** alice left (client certificate no longer accepted)"],
        )
        await twistd.wait_for_message(
            r"127\.0\.0\.1:\d+ "
            + re.escape(
                f"(alice) disconnected: client certificate"
                f" {issued['alice'].fingerprint} is no longer accepted after the"
                " reload (certificate revoked)"
            )
        )
        # In TLS 1.3 the client's side of the handshake is done before the
        # server refuses its certificate.
        again = await self.connect(twistd, certificate("alice"))
        await again.wait_closed()
        self.assertEqual(again.unread, [])
        self.assertIn("certificate revoked", str(again.ended.value))
        bob.send(b"/who")
        self.assertEqual(await bob.next_lines(1), ["*** 1 here: bob"])
        await self.terminate(twistd, bob)
