# -*- test-case-name: tests.test_reload -*-
"""
Certificate changes without downtime.

L{CertificateReloader} loads the TLS material again (certificate, key with
the same passphrase source as at start, client CA and CRL), checks the new
set completely, with the same rules and words as at start and as
C{securemsg check} (L{securemsg.tls.files}), and only then swaps the context
that new handshakes use.  If anything is wrong, the old set stays in
service.  Connections already
made keep their TLS session, but their client certificates are checked
again against the new client CA and CRL: a client whose certificate is now
revoked, or no longer issued by a client CA, is disconnected (an operator
loses their rights with it).

It runs on SIGHUP, on an operator's C{/reload}, and (with C{--watch-certs})
when the files change on disk.  Each day the same material is also put in a
new context, for new session ticket keys (L{SessionKeyService}).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from securemsg.tls import certs, files
from securemsg.tls.policy import (
    ClientCertificateCheck,
    LoadedTLS,
    ServerTLS,
    TLSConfigError,
    TLSSettings,
    load_tls,
)

#: How often --watch-certs looks at the files.
WATCH_INTERVAL: Final = 5.0
#: How often the server checks how long its certificate has left.
EXPIRY_CHECK_INTERVAL: Final = 24 * 60 * 60.0
#: How long the keys that encrypt new TLS session tickets serve before new
#: ones replace them (a reload replaces them too; the old ones stay in
#: memory while connections made with them last).
SESSION_KEY_LIFETIME: Final = 24 * 60 * 60.0


def _describe(loaded: LoadedTLS) -> str:
    certificate = loaded.credentials.certificate
    return (
        f"{certs.fingerprint(certificate)} (expires"
        f" {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
    )


class CertificateReloader:
    """
    Holds the TLS material in service and replaces it, transactionally.

    @ivar current: what is in service now.
    @ivar recheck: given how the new material judges client certificates,
        disconnects the connected clients it no longer accepts and says how
        many (L{securemsg.server.factory.ChatServerFactory.recheck_certificates});
        L{None} if there is nobody to check.
    """

    log = Logger()

    def __init__(
        self,
        settings: TLSSettings,
        creator: ServerTLS,
        current: LoadedTLS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        recheck: Callable[[ClientCertificateCheck], int] | None = None,
    ) -> None:
        self.settings = settings
        self.creator = creator
        self.current = current
        self._now = now
        self.recheck = recheck
        #: Reloads that worked and that failed, for the metrics.
        self.reloads_ok = 0
        self.reloads_failed = 0

    def reload(self, why: str = "reload requested") -> tuple[bool, str]:
        """
        Load and check the files again; put them in service only if all is
        well.

        @return: whether it worked, and one line saying what happened.
        """
        try:
            loaded = load_tls(self.settings, now=self._now())
        except TLSConfigError as error:
            self.reloads_failed += 1
            self.log.error(
                "certificate reload ({why}) failed; still serving {old}: {error}",
                why=why,
                old=_describe(self.current),
                error=error,
            )
            return False, f"reload failed, the current certificate stays: {error}"
        self.reloads_ok += 1
        old, self.current = self.current, loaded
        self.creator.context = loaded.context
        self.log.info(
            "certificates reloaded ({why}): {old} -> {new}",
            why=why,
            old=_describe(old),
            new=_describe(loaded),
        )
        message = f"reloaded: now serving {_describe(loaded)}"
        check = loaded.client_certificate_check()
        if check is not None and self.recheck is not None:
            dropped = self.recheck(check)
            if dropped:
                message += (
                    f"; disconnected {dropped} client"
                    f"{'s' if dropped > 1 else ''} whose certificate is no longer"
                    " accepted"
                )
        return True, message

    def renew_session_keys(self) -> None:
        """
        Serve new handshakes from a new context of the same material, with
        new session ticket keys (L{LoadedTLS.renewed}).

        OpenSSL keeps the keys that encrypt session tickets for as long as
        the context lives, and the binding pyOpenSSL uses has no call to
        set them; whoever learned them could decrypt every TLS 1.2 session
        that got a ticket under them (a TLS 1.2 ticket holds the session's
        master secret).  Sessions made before no longer resume: their
        clients make a full handshake.  The old context, keys included,
        lives on in memory until the last connection made from it ends.
        """
        try:
            renewed = self.current.renewed(self.settings)
        except TLSConfigError as error:
            self.log.error(
                "TLS session ticket keys not renewed; the old ones stay: {error}",
                error=error,
            )
            return
        except Exception:
            # Not expected of material that loaded once; the daily call
            # must go on all the same (a LoopingCall stops at an error).
            self.log.failure("TLS session ticket keys not renewed; the old ones stay")
            return
        self.current = renewed
        self.creator.context = renewed.context
        self.log.info("TLS session ticket keys renewed")

    def expiry_warnings(self) -> list[str]:
        """
        Warnings about the certificate in service, in the words of a start
        or C{securemsg check}: expired (it was not when it was loaded) or
        expiring within L{files.CERTIFICATE_WARNING_DAYS} days.
        """
        findings = files.Findings()
        credentials = self.current.credentials
        files.check_dates(
            credentials.certificate,
            f"certificate {credentials.cert_path}",
            self._now(),
            findings,
        )
        return findings.messages("error") + findings.messages("warning")


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)


class ReloadService(Service):
    """
    Reloads the certificates on SIGHUP, and when the files change if asked
    to; and checks at start that the files can still be read after twistd
    dropped privileges (C{--uid}/C{--gid}), or a reload would fail.
    """

    log = Logger()

    def __init__(
        self, reloader: CertificateReloader, clock: Any, *, watch: bool = False
    ) -> None:
        self.reloader = reloader
        self.clock = clock
        self.watch = watch
        self._previous_handler: Any = None
        self._watching = LoopingCall(self.check_files)
        self._watching.clock = clock
        self._signatures: dict[str, tuple[int, int, int] | None] = {}

    def startService(self) -> None:
        super().startService()
        self._check_readable()
        if hasattr(signal, "SIGHUP"):
            self._previous_handler = signal.signal(signal.SIGHUP, self._on_sighup)
        self._signatures = self._current_signatures()
        if self.watch:
            self._watching.start(WATCH_INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None
        if self._watching.running:
            self._watching.stop()

    def _on_sighup(self, number: int, frame: FrameType | None) -> None:
        # Signal handlers run between bytecodes; do the work in the reactor.
        self.clock.callFromThread(self.reloader.reload, "SIGHUP")

    def _check_readable(self) -> None:
        for path in self.reloader.settings.files():
            if not os.access(path, os.R_OK):
                self.log.warn(
                    "{path} cannot be read by this process (uid {uid}); certificate"
                    " reloads will fail until it can (twistd --uid/--gid drop"
                    " privileges after start)",
                    path=path,
                    uid=os.getuid(),
                )

    def _current_signatures(self) -> dict[str, tuple[int, int, int] | None]:
        return {path: _signature(path) for path in self.reloader.settings.files()}

    def check_files(self) -> None:
        """Reload if any file changed since the last look (--watch-certs)."""
        now = self._current_signatures()
        if now != self._signatures:
            self._signatures = now
            self.reloader.reload("files changed")


class _Periodic(Service):
    """Calls C{call} every C{interval} seconds while running (not at start)."""

    def __init__(self, call: Callable[[], object], interval: float, clock: Any) -> None:
        self._interval = interval
        self._loop = LoopingCall(call)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()


class ExpiryWarningService(_Periodic):
    """
    Warns each day while the certificate in service (whichever the last
    reload put there) is expired or close to it.
    """

    log = Logger()

    def __init__(self, reloader: CertificateReloader, clock: Any) -> None:
        super().__init__(self.warn_expiry, EXPIRY_CHECK_INTERVAL, clock)
        self.reloader = reloader

    def warn_expiry(self) -> None:
        """Log a warning while the certificate is expired or close to it."""
        for warning in self.reloader.expiry_warnings():
            # Not "warning=": trial's reporter takes a log event with a
            # "warning" key for a Python warning and fails on it.
            self.log.warn("{problem}", problem=warning)


class SessionKeyService(_Periodic):
    """
    Renews the TLS session ticket keys every L{SESSION_KEY_LIFETIME}
    (L{CertificateReloader.renew_session_keys}).
    """

    def __init__(self, reloader: CertificateReloader, clock: Any) -> None:
        super().__init__(reloader.renew_session_keys, SESSION_KEY_LIFETIME, clock)
        self.reloader = reloader
