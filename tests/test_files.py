"""
Tests for L{securemsg.tls.files}, the one reader of the server's TLS files:
a server start, a reload and C{securemsg check} judge the same files alike,
in the same words.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from securemsg import tap
from securemsg.admin import ca
from securemsg.server.reload import CertificateReloader
from securemsg.tls import files
from securemsg.tls import policy as tls

from . import _certs
from ._cli import run as run_command

PASSPHRASE = b"correct horse battery staple"

#: A broken input: given the test case, write the files and return the
#: server's TLS options for them (the same for C{securemsg check}).
Breakage = Callable[["SameVerdictTests"], list[str]]


def missing_certificate(case: SameVerdictTests) -> list[str]:
    cert, key = case.good()
    os.remove(cert)
    return ["--cert", cert, "--key", key]


def missing_key(case: SameVerdictTests) -> list[str]:
    cert, _ = case.good()
    return ["--cert", cert, "--key", case.path("nope.key")]


def key_mismatch(case: SameVerdictTests) -> list[str]:
    cert, _ = case.good()
    _, other_key = _certs.issue(case.ca).write(case.directory, "other")
    return ["--cert", cert, "--key", other_key]


def wrong_passphrase(case: SameVerdictTests) -> list[str]:
    cert, key = case.server.write(case.directory, passphrase=PASSPHRASE)
    wrong = Path(case.path("wrong.txt"))
    wrong.write_bytes(b"not it\n")
    return ["--cert", cert, "--key", key, "--key-passphrase-file", str(wrong)]


def expired_certificate(case: SameVerdictTests) -> list[str]:
    cert, key = _certs.issue(case.ca, days_valid=(-30, -1)).write(case.directory)
    return ["--cert", cert, "--key", key]


def client_ca_not_a_ca(case: SameVerdictTests) -> list[str]:
    cert, key = case.good()
    return ["--cert", cert, "--key", key, "--client-ca", cert]


def crl_of_another_ca(case: SameVerdictTests) -> list[str]:
    cert, key = case.good()
    mine, other = ca.ca_paths(case.path("mine")), ca.ca_paths(case.path("other"))
    ca.init_ca(mine.directory)
    ca.init_ca(other.directory, name="other CA")
    return [
        "--cert", cert, "--key", key,
        "--client-ca", mine.certificate, "--crl", other.crl,
    ]  # fmt: skip


def expired_crl(case: SameVerdictTests) -> list[str]:
    cert, key = case.good()
    paths = ca.ca_paths(case.path("ca"))
    ca.init_ca(paths.directory, crl_days=1, now=_certs.NOW - timedelta(days=10))
    return [
        "--cert", cert, "--key", key,
        "--client-ca", paths.certificate, "--crl", paths.crl,
    ]  # fmt: skip


class SameVerdictTests(SynchronousTestCase):
    """
    For each broken input, the server refuses to start with one line
    (C{securemsg: PROBLEM}), a reload to it fails with the same PROBLEM, and
    C{securemsg check} on the same files prints PROBLEM as its only C{FAIL}
    line.  One test per input, made from L{CASES}.
    """

    CASES: ClassVar[dict[str, Breakage]] = {
        "missing_certificate": missing_certificate,
        "missing_key": missing_key,
        "key_mismatch": key_mismatch,
        "wrong_passphrase": wrong_passphrase,
        "expired_certificate": expired_certificate,
        "client_ca_not_a_ca": client_ca_not_a_ca,
        "crl_of_another_ca": crl_of_another_ca,
        "expired_crl": expired_crl,
    }

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.ca, self.server = _certs.default_ca_and_server()
        # No passphrase from the environment or a terminal.
        environ = dict(os.environ)
        environ.pop(tls.PASSPHRASE_ENVIRONMENT_VARIABLE, None)
        self.patch(os, "environ", environ)
        self.patch(sys, "stdin", io.StringIO())

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def good(self) -> tuple[str, str]:
        """A good certificate and key, written as server.pem and server.key."""
        return self.server.write(self.directory)

    def start_error(self, arguments: list[str]) -> str:
        """What C{twistd securemsg} says when it refuses to start."""
        options = tap.Options()
        options.parseOptions([*arguments, "--history-db", ":memory:"])
        error = self.assertRaises(SystemExit, tap.makeService, options)
        message = str(error.code)
        self.assertTrue(message.startswith("securemsg: "), message)
        return message.removeprefix("securemsg: ")

    def reload_error(self, arguments: list[str]) -> str:
        """What a reload from good files to these says."""
        good_cert, good_key = self.server.write(self.directory, "good")
        loaded = tls.load_tls(tls.TLSSettings(good_cert, good_key))
        reloader = CertificateReloader(
            tls.TLSSettings(good_cert, good_key), tls.ServerTLS(loaded.context), loaded
        )
        options = tap.Options()
        options.parseOptions(arguments)
        reloader.settings = options.tls_settings()
        with capturedLogs():
            worked, message = reloader.reload("test")
        self.assertFalse(worked)
        prefix = "reload failed, the current certificate stays: "
        self.assertTrue(message.startswith(prefix), message)
        return message.removeprefix(prefix)

    def check_failures(self, arguments: list[str]) -> list[str]:
        """The FAIL lines of C{securemsg check}, which exits 1."""
        result = run_command("check", *arguments)
        self.assertEqual((result.code, result.stderr), (1, ""), result)
        return [line for line in result.lines if line.startswith("FAIL ")]

    def assertSameVerdict(self, breakage: Breakage) -> None:
        arguments = breakage(self)
        problem = self.start_error(arguments)
        self.assertNotIn("\n", problem)
        self.assertEqual(self.check_failures(arguments), [f"FAIL {problem}"])
        self.assertEqual(self.reload_error(arguments), problem)


def _make_test(name: str, breakage: Breakage) -> Callable[[SameVerdictTests], None]:
    def test(self: SameVerdictTests) -> None:
        self.assertSameVerdict(breakage)

    test.__name__ = f"test_{name}"
    test.__doc__ = f"{name.replace('_', ' ').capitalize()}: the same FAIL everywhere."
    return test


for _name, _breakage in SameVerdictTests.CASES.items():
    setattr(SameVerdictTests, f"test_{_name}", _make_test(_name, _breakage))


class StartAndReloadTests(SynchronousTestCase):
    """
    L{tls.load_tls} is the start and the reload: what it refuses, both
    refuse; what it warns about is logged, in C{securemsg check}'s words.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.ca, _ = _certs.default_ca_and_server()

    def load(self, pair: _certs.Pair) -> tuple[tls.LoadedTLS, list[str]]:
        """Load C{pair} as the server does; return it and the warnings logged."""
        cert, key = pair.write(self.directory)
        with capturedLogs() as events:
            loaded = tls.load_tls(tls.TLSSettings(cert, key))
        warnings = [
            formatEvent(event)
            for event in events
            if event["log_level"] == LogLevel.warn
        ]
        return loaded, warnings

    def test_expired_refused_at_start(self) -> None:
        """
        An expired certificate stops the start (it used to be served with
        a warning), with the date it expired.
        """
        expired = _certs.issue(self.ca, days_valid=(-10, -1))
        cert, key = expired.write(self.directory)
        error = self.assertRaises(
            tls.TLSConfigError, tls.load_tls, tls.TLSSettings(cert, key)
        )
        when = expired.certificate.not_valid_after_utc
        self.assertEqual(
            str(error),
            f"certificate {cert} expired on {when:%Y-%m-%d %H:%M} UTC (1 day ago)",
        )

    def test_expiring_soon_warned(self) -> None:
        """
        A certificate that expires within 14 days is served, and the warning
        logged is the one C{securemsg check} prints.
        """
        soon = _certs.issue(self.ca, days_valid=(-1, 5))
        loaded, warnings = self.load(soon)
        self.assertEqual(loaded.credentials.certificate, soon.certificate)
        when = soon.certificate.not_valid_after_utc
        cert = str(self.directory / "server.pem")
        self.assertEqual(
            warnings,
            [
                f"certificate {cert} expires in 4 days, on"
                f" {when:%Y-%m-%d %H:%M} UTC; renew it"
            ],
        )
        result = run_command("check", "--cert", cert, "--key", cert[:-3] + "key")
        self.assertIn(f"warn {warnings[0]}", result.lines)

    def test_good_pair_quiet(self) -> None:
        """A good certificate and key log no warning."""
        _, warnings = self.load(_certs.issue(self.ca))
        self.assertEqual(warnings, [])


class FindingsTests(SynchronousTestCase):
    """L{files.Findings} keeps findings in order and raises the first error."""

    def test_first_error_raised(self) -> None:
        """The first error, not a later one, is the exception's message."""
        findings = files.Findings()
        findings.ok("fine")
        findings.warn("careful")
        findings.error("first")
        findings.error("second")
        self.assertEqual(findings.messages("warning"), ["careful"])
        error = self.assertRaises(files.TLSConfigError, findings.raise_first_error)
        self.assertEqual(str(error), "first")
        self.assertEqual(
            [finding.level for finding in findings],
            ["ok", "warning", "error", "error"],
        )

    def test_no_error(self) -> None:
        """Without an error nothing is raised."""
        findings = files.Findings()
        findings.warn("careful")
        findings.raise_first_error()


class CheckDatesTests(SynchronousTestCase):
    """
    L{files.check_dates}: the dates of a certificate, judged the same for
    the start, a reload, the daily warning and C{securemsg check}.
    """

    def setUp(self) -> None:
        ca, _ = _certs.default_ca_and_server()
        self.cert = _certs.issue(ca, days_valid=(-10, 30)).certificate
        self.expiry = self.cert.not_valid_after_utc

    def findings(self, left: timedelta, *, quiet: bool = False) -> list[files.Finding]:
        """What C{check_dates} says with C{left} to go before expiry."""
        findings = files.Findings()
        now = self.expiry - left
        files.check_dates(self.cert, "certificate X", now, findings, quiet=quiet)
        return findings.items

    def test_expired(self) -> None:
        """An expired certificate is an error, with its date and how long ago."""
        [finding] = self.findings(-timedelta(days=3, hours=2))
        self.assertEqual(
            finding,
            files.Finding(
                "error",
                f"certificate X expired on {self.expiry:%Y-%m-%d %H:%M} UTC"
                " (3 days ago)",
            ),
        )

    def test_not_yet_valid(self) -> None:
        """A certificate from the future is an error, with a clock hint."""
        [finding] = self.findings(timedelta(days=45))
        start = self.cert.not_valid_before_utc
        self.assertEqual(
            finding,
            files.Finding(
                "error",
                f"certificate X is not valid until {start:%Y-%m-%d %H:%M} UTC;"
                " check the system clock, or wait",
            ),
        )

    def test_expiring_soon(self) -> None:
        """
        Within 14 days of expiry: a warning with the days left ("1 day",
        "less than a day"); a second more than 14 days is fine.
        """
        for left, said in (
            (timedelta(days=14), "14 days"),
            (timedelta(days=2, hours=3), "2 days"),
            (timedelta(days=1, hours=23), "1 day"),
            (timedelta(hours=23), "less than a day"),
        ):
            [finding] = self.findings(left)
            self.assertEqual(
                finding,
                files.Finding(
                    "warning",
                    f"certificate X expires in {said}, on"
                    f" {self.expiry:%Y-%m-%d %H:%M} UTC; renew it",
                ),
            )
        [fine] = self.findings(timedelta(days=14, seconds=1))
        self.assertEqual(
            fine,
            files.Finding(
                "ok",
                f"certificate X valid until {self.expiry:%Y-%m-%d %H:%M} UTC"
                " (14 days left)",
            ),
        )

    def test_quiet(self) -> None:
        """With C{quiet}, nothing is said of a good certificate."""
        self.assertEqual(self.findings(timedelta(days=20), quiet=True), [])
