"""
Tests for L{securemsg.admin.cli} and C{python -m securemsg}.

L{main} is called in-process with explicit argument lists and C{StringIO}
streams; every file goes into a fresh temporary directory.  One test runs
C{python -m securemsg gencert} in a subprocess.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.trial.unittest import SynchronousTestCase

import securemsg
from securemsg.admin.cli import SecuremsgOptions, main
from securemsg.admin.command import CommandOptions
from securemsg.admin.gencert import GencertOptions
from securemsg.tls import certs

from ._cli import Result
from ._cli import mode as _mode
from ._cli import run as _run


class GencertTests(SynchronousTestCase):
    """Tests for C{securemsg gencert}."""

    def setUp(self) -> None:
        """Give each test an empty directory and default-looking paths in it."""
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.cert = self.directory / "certificate.pem"
        self.key = self.directory / "private.key"

    def gencert(self, *extra: str) -> Result:
        """Run C{gencert} writing to this test's paths, plus C{extra}."""
        return _run("gencert", "--cert", str(self.cert), "--key", str(self.key), *extra)

    def assertUsageError(self, result: Result, *fragments: str) -> None:
        """
        C{result} is a usage error: exit 2, nothing on stdout, exactly one
        line on stderr that starts with C{securemsg gencert:}, contains
        every fragment and points at C{--help}; and nothing was written.
        """
        self.assertEqual(result.code, 2)
        self.assertEqual(result.stdout, "")
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertTrue(result.stderr.startswith("securemsg gencert: "), result.stderr)
        self.assertIn("securemsg gencert --help", result.stderr)
        for fragment in fragments:
            self.assertIn(fragment, result.stderr)
        self.assertEqual(os.listdir(self.directory), [])

    def test_success(self) -> None:
        """
        C{gencert} writes a matching ECDSA key (mode 0600) and certificate
        and reports the paths, names, expiry, fingerprint and the command to
        start the server, without C{--key} since the key is C{private.key}
        beside the certificate.
        """
        result = self.gencert()
        self.assertEqual((result.code, result.stderr), (0, ""))
        [cert] = certs.load_certificates(self.cert)
        key = serialization.load_pem_private_key(self.key.read_bytes(), None)
        self.assertIsInstance(key, ec.EllipticCurvePrivateKey)
        self.assertTrue(certs.key_matches_certificate(key, cert))
        self.assertEqual(_mode(self.key), 0o600)

        output = result.stdout
        self.assertIn(str(self.cert), output)
        self.assertIn(str(self.key), output)
        self.assertIn("localhost, 127.0.0.1, ::1", output)
        self.assertIn(cert.not_valid_after_utc.strftime("%Y-%m-%d"), output)
        self.assertIn(certs.fingerprint(cert), output)
        hint = [line for line in output.splitlines() if "twistd" in line]
        self.assertEqual(len(hint), 1)
        self.assertTrue(hint[0].endswith(f"twistd -n securemsg --cert {self.cert}"))

    def test_key_elsewhere_in_hint(self) -> None:
        """
        When the key is not C{private.key} beside the certificate the
        server hint passes C{--key}.
        """
        self.key = self.directory / "server.key"
        result = self.gencert()
        self.assertEqual(result.code, 0, result.stderr)
        self.assertIn(
            f"twistd -n securemsg --cert {self.cert} --key {self.key}\n",
            result.stdout,
        )

    def test_hosts_and_days(self) -> None:
        """
        C{--host} (repeatable) adds DNS names and IP addresses; C{--days}
        sets the lifetime.
        """
        result = self.gencert(
            "--host", "chat.example.org", "--host", "192.0.2.7", "--days", "30"
        )
        self.assertEqual(result.code, 0, result.stderr)
        [cert] = certs.load_certificates(self.cert)
        self.assertEqual(
            certs.subject_alt_names(cert),
            ["chat.example.org", "192.0.2.7", "localhost", "127.0.0.1", "::1"],
        )
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        self.assertEqual(lifetime.days, 30)
        self.assertIn("chat.example.org, 192.0.2.7, localhost", result.stdout)

    def test_rsa(self) -> None:
        """C{--rsa 2048} makes an RSA key of that size."""
        result = self.gencert("--rsa", "2048")
        self.assertEqual(result.code, 0, result.stderr)
        key = serialization.load_pem_private_key(self.key.read_bytes(), None)
        self.assertIsInstance(key, rsa.RSAPrivateKey)
        assert isinstance(key, rsa.RSAPrivateKey)
        self.assertEqual(key.key_size, 2048)
        self.assertIn("RSA 2048-bit", result.stdout)

    def test_refuses_existing_certificate(self) -> None:
        """
        Without C{--force} an existing certificate stops the command with a
        one-line error before anything is written: the key is not created.
        """
        self.cert.write_bytes(b"old certificate")
        result = self.gencert()
        self.assertEqual(result.code, 1)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr,
            f"securemsg gencert: {self.cert} already exists;"
            " use --force to replace it\n",
        )
        self.assertEqual(self.cert.read_bytes(), b"old certificate")
        self.assertFalse(self.key.exists())

    def test_refuses_existing_key(self) -> None:
        """
        Without C{--force} an existing key stops the command: the key is
        untouched and no certificate is created.
        """
        self.key.write_bytes(b"old key")
        os.chmod(self.key, 0o600)
        result = self.gencert()
        self.assertEqual(result.code, 1)
        self.assertEqual(
            result.stderr,
            f"securemsg gencert: {self.key} already exists;"
            " use --force to replace it\n",
        )
        self.assertEqual(self.key.read_bytes(), b"old key")
        self.assertFalse(self.cert.exists())

    def test_refuses_existing_pair(self) -> None:
        """
        Without C{--force} an existing pair that is not a certificate and
        its key is refused with one line naming both files and saying what
        is wrong, and both are left alone.
        """
        self.cert.write_bytes(b"old certificate")
        self.key.write_bytes(b"old key")
        result = self.gencert()
        self.assertEqual(result.code, 1)
        self.assertEqual(
            result.stderr,
            f"securemsg gencert: {self.cert} and {self.key} already exist, but"
            f" {self.cert}: no PEM certificate found (expected a '-----BEGIN"
            " CERTIFICATE-----' block); use --force to replace them\n",
        )
        self.assertEqual(self.cert.read_bytes(), b"old certificate")
        self.assertEqual(self.key.read_bytes(), b"old key")

    def test_run_again_keeps_pair(self) -> None:
        """
        Run again, as the README's first command is, C{gencert} keeps the
        pair it made, says so in one line with the fingerprint, and exits 0
        (so the server starts after it, with the certificate clients trust).
        """
        self.assertEqual(_run("gencert", "--cert", str(self.cert)).code, 0)
        before = self.cert.read_bytes(), self.key.read_bytes()
        [cert] = certs.load_certificates(self.cert)

        result = _run("gencert", "--cert", str(self.cert))
        self.assertEqual((result.code, result.stderr), (0, ""))
        expires = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        self.assertEqual(
            result.stdout,
            f"Kept {self.cert} and {self.key}: they already exist and match"
            f" ({certs.fingerprint(cert)}, expires {expires}); --force makes a"
            " new pair\n",
        )
        self.assertEqual((self.cert.read_bytes(), self.key.read_bytes()), before)

    def test_run_again_keeps_encrypted_pair(self) -> None:
        """
        An encrypted pair is kept when the same passphrase file is given
        again; without it the key cannot be checked, so it is refused.
        """
        passphrase_file = self.directory.parent / "passphrase.txt"
        passphrase_file.write_bytes(b"correct horse\n")
        given = ("--passphrase-file", str(passphrase_file))
        self.assertEqual(self.gencert(*given).code, 0)
        kept = self.gencert(*given)
        self.assertEqual((kept.code, kept.stderr), (0, ""))
        self.assertTrue(kept.stdout.startswith("Kept "), kept.stdout)

        refused = self.gencert()
        self.assertEqual(refused.code, 1)
        self.assertIn(
            f"but {self.key} is encrypted: give its --passphrase-file to check it;",
            refused.stderr,
        )

    def refused_again(self, *extra: str) -> str:
        """
        Run C{gencert} once, then again with C{extra}: the second run must
        be refused with one line and leave the files alone; return the line.
        """
        self.assertEqual(self.gencert().code, 0)
        before = self.cert.read_bytes(), self.key.read_bytes()
        result = self.gencert(*extra)
        self.assertEqual((result.code, result.stdout), (1, ""))
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertTrue(
            result.stderr.startswith(
                f"securemsg gencert: {self.cert} and {self.key} already exist, but "
            ),
            result.stderr,
        )
        self.assertTrue(
            result.stderr.endswith("; use --force to replace them\n"), result.stderr
        )
        self.assertEqual((self.cert.read_bytes(), self.key.read_bytes()), before)
        return result.stderr

    def test_existing_pair_without_asked_host(self) -> None:
        """A kept certificate must be valid for every --host asked for."""
        self.assertIn(
            f"{self.cert} is not valid for chat.example.org;",
            self.refused_again("--host", "localhost", "--host", "chat.example.org"),
        )

    def test_existing_pair_of_other_key_type(self) -> None:
        """A kept key must be of the --rsa size asked for."""
        self.assertIn(
            f"{self.key} is not an RSA 2048-bit key;",
            self.refused_again("--rsa", "2048"),
        )

    def test_existing_pair_not_matching(self) -> None:
        """A key that is not the certificate's is not kept."""
        cert, _ = certs.generate_self_signed()
        _, other_key = certs.generate_self_signed()
        certs.write_certificate(self.cert, cert, force=False)
        certs.write_private_key(self.key, other_key, None, force=False)
        result = self.gencert()
        self.assertEqual(result.code, 1)
        self.assertIn(f"{self.key} is not the key of {self.cert};", result.stderr)

    def test_existing_pair_expired(self) -> None:
        """An expired certificate is not kept, even with its own key."""
        cert, key = certs.generate_self_signed(
            now=datetime.now(UTC) - timedelta(days=3), days=1
        )
        certs.write_private_key(self.key, key, None, force=False)
        certs.write_certificate(self.cert, cert, force=False)
        result = self.gencert()
        self.assertEqual(result.code, 1)
        expired = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        self.assertIn(f"{self.cert} expired on {expired};", result.stderr)

    def test_force_replaces_both(self) -> None:
        """
        With C{--force} both files are replaced; the new key file is 0600
        even though the old one was world-readable.
        """
        self.cert.write_bytes(b"old certificate")
        self.key.write_bytes(b"old key")
        os.chmod(self.key, 0o644)
        result = self.gencert("--force")
        self.assertEqual(result.code, 0, result.stderr)
        [cert] = certs.load_certificates(self.cert)
        key = serialization.load_pem_private_key(self.key.read_bytes(), None)
        self.assertTrue(certs.key_matches_certificate(key, cert))
        self.assertEqual(_mode(self.key), 0o600)
        self.assertEqual(
            sorted(os.listdir(self.directory)), ["certificate.pem", "private.key"]
        )

    def test_certificate_write_fails(self) -> None:
        """
        If the certificate cannot be written after the key was, the new key
        file is removed again, so no half pair is left; the error is one
        line.
        """

        def fail(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        self.patch(certs, "write_certificate", fail)
        result = self.gencert()
        self.assertEqual(result.code, 1)
        self.assertEqual(
            result.stderr,
            f"securemsg gencert: cannot write {self.cert}: Permission denied\n",
        )
        self.assertEqual(os.listdir(self.directory), [])

    def test_certificate_write_fails_after_replacing_key(self) -> None:
        """
        With C{--force}, if the certificate cannot be written after an
        existing key was replaced, the error says so.
        """

        def fail(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        self.key.write_bytes(b"old key")
        self.patch(certs, "write_certificate", fail)
        result = self.gencert("--force")
        self.assertEqual(result.code, 1)
        self.assertEqual(result.stderr.count("\n"), 1)
        self.assertIn(f"{self.key} was already replaced", result.stderr)

    def test_certificate_appears_meanwhile(self) -> None:
        """
        If the certificate file appears between the check and the write,
        the command still refuses to replace it, and removes its new key.
        """

        def exists(*args: object, **kwargs: object) -> None:
            raise FileExistsError(17, "File exists")

        self.patch(certs, "write_certificate", exists)
        result = self.gencert()
        self.assertEqual(result.code, 1)
        self.assertIn("already exists; use --force", result.stderr)
        self.assertEqual(os.listdir(self.directory), [])

    def test_key_write_fails(self) -> None:
        """A key file that cannot be written is a one-line error."""

        def fail(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        self.patch(certs, "write_private_key", fail)
        result = self.gencert()
        self.assertEqual(result.code, 1)
        self.assertEqual(
            result.stderr,
            f"securemsg gencert: cannot write {self.key}: Permission denied\n",
        )

    def test_key_appears_meanwhile(self) -> None:
        """
        If the key file appears between the check and the write, the
        command refuses to replace it.
        """

        def exists(*args: object, **kwargs: object) -> None:
            raise FileExistsError(17, "File exists")

        self.patch(certs, "write_private_key", exists)
        result = self.gencert()
        self.assertEqual(result.code, 1)
        self.assertIn(f"{self.key} already exists; use --force", result.stderr)

    def test_unexpected_error(self) -> None:
        """
        Even an unexpected exception is reported as one line, exit 1, not as
        a traceback; an interrupt exits 130.
        """

        def explode(*args: object, **kwargs: object) -> None:
            raise RuntimeError("something\nbroke")

        self.patch(certs, "generate_self_signed", explode)
        result = self.gencert()
        self.assertEqual(result.code, 1)
        self.assertEqual(
            result.stderr,
            "securemsg gencert: unexpected error: RuntimeError: something broke\n",
        )

        def interrupt(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt()

        self.patch(certs, "generate_self_signed", interrupt)
        result = self.gencert()
        self.assertEqual(
            (result.code, result.stderr), (130, "securemsg gencert: interrupted\n")
        )

    def test_missing_directory(self) -> None:
        """
        A path in a directory that does not exist is a one-line error, and
        the other file is not written.
        """
        self.cert = self.directory / "missing" / "certificate.pem"
        result = self.gencert()
        self.assertEqual(result.code, 1)
        self.assertEqual(result.stderr.count("\n"), 1)
        self.assertIn("there is no directory", result.stderr)
        self.assertEqual(os.listdir(self.directory), [])

    def test_passphrase_file(self) -> None:
        """
        C{--passphrase-file} encrypts the key with the file's first line,
        without its line ending; the key loads only with that passphrase.
        """
        secret = self.directory / "secret.txt"
        secret.write_bytes(b"correct horse \r\nsecond line\n")
        result = self.gencert("--passphrase-file", str(secret))
        self.assertEqual(result.code, 0, result.stderr)
        self.assertIn("encrypted with the passphrase", result.stdout)
        data = self.key.read_bytes()
        self.assertTrue(data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"))
        self.assertEqual(_mode(self.key), 0o600)
        self.assertRaises(TypeError, serialization.load_pem_private_key, data, None)
        self.assertRaises(
            ValueError, serialization.load_pem_private_key, data, b"correct horse"
        )
        key = serialization.load_pem_private_key(data, b"correct horse ")
        [cert] = certs.load_certificates(self.cert)
        self.assertTrue(certs.key_matches_certificate(key, cert))
        self.assertIn(
            f"twistd -n securemsg --cert {self.cert} --key-passphrase-file {secret}\n",
            result.stdout,
        )

    def test_passphrase_is_utf8(self) -> None:
        """
        The passphrase file is UTF-8 text, read the way the server reads
        C{--key-passphrase-file}; other bytes are a one-line error.
        """
        secret = self.directory / "secret.txt"
        secret.write_text("grüße\n", encoding="utf-8")
        result = self.gencert("--passphrase-file", str(secret))
        self.assertEqual(result.code, 0, result.stderr)
        serialization.load_pem_private_key(self.key.read_bytes(), "grüße".encode())
        for path in (self.cert, self.key):
            path.unlink()
        secret.write_bytes(b"gr\xfc\xdfe\n")
        result = self.gencert("--passphrase-file", str(secret))
        self.assertEqual(result.code, 1)
        self.assertIn("is not UTF-8 text", result.stderr)
        self.assertEqual(os.listdir(self.directory), ["secret.txt"])

    def test_empty_passphrase(self) -> None:
        """
        An empty first line in the passphrase file is a one-line error and
        nothing is written.
        """
        secret = self.directory / "secret.txt"
        for content in (b"", b"\n", b"\nlater line\n"):
            secret.write_bytes(content)
            result = self.gencert("--passphrase-file", str(secret))
            self.assertEqual(result.code, 1)
            self.assertEqual(result.stderr.count("\n"), 1)
            self.assertIn("empty first line", result.stderr)
            self.assertEqual(os.listdir(self.directory), ["secret.txt"])

    def test_missing_passphrase_file(self) -> None:
        """An unreadable passphrase file is a one-line error."""
        result = self.gencert("--passphrase-file", str(self.directory / "nope"))
        self.assertEqual(result.code, 1)
        self.assertEqual(result.stderr.count("\n"), 1)
        self.assertIn("cannot read passphrase file", result.stderr)
        self.assertIn("No such file", result.stderr)
        self.assertEqual(os.listdir(self.directory), [])

    def test_bad_rsa(self) -> None:
        """Unsupported or non-numeric C{--rsa} values are usage errors."""
        for value in ("1024", "abc", "", "4096.0"):
            self.assertUsageError(self.gencert("--rsa", value), "--rsa", "2048")

    def test_bad_days(self) -> None:
        """Zero, negative, non-numeric and absurd C{--days} are usage errors."""
        for value in ("0", "-5", "ten", "1.5"):
            self.assertUsageError(self.gencert("--days", value), "--days", repr(value))
        self.assertUsageError(self.gencert("--days", "99999999"), "too far")

    def test_bad_host(self) -> None:
        """A C{--host} that is neither a host name nor an IP is a usage error."""
        for value in ("bad host", "a..b", "1.2.3", ""):
            self.assertUsageError(self.gencert("--host", value), "--host", repr(value))

    def test_other_usage_errors(self) -> None:
        """
        Unknown options, missing option values, stray arguments and the
        same file for certificate and key are usage errors.
        """
        self.assertUsageError(self.gencert("--bogus"), "bogus")
        self.assertUsageError(self.gencert("extra"), "'extra'")
        self.assertUsageError(self.gencert("--days"), "--days")
        self.assertUsageError(
            _run("gencert", "--cert", str(self.cert), "--key", str(self.cert)),
            "different files",
        )
        self.assertUsageError(self.gencert("--cert", ""), "--cert")

    def test_help(self) -> None:
        """
        C{gencert --help} prints every option with its default to stdout
        and exits 0 without writing anything.  (C{COLUMNS} is fixed because
        L{usage.Options} wraps help to the terminal width.)
        """
        self.patch(os, "environ", {**os.environ, "COLUMNS": "80"})
        result = _run("gencert", "--help")
        self.assertEqual((result.code, result.stderr), (0, ""))
        self.assertTrue(result.stdout.startswith("Usage: securemsg gencert"))
        for option in (
            "--cert=",
            "certificate.pem",
            "--key=",
            "private.key",
            "--host=",
            "--rsa=",
            "--days=",
            "365",
            "--passphrase-file=",
            "--force",
        ):
            self.assertIn(option, result.stdout)
        self.assertEqual(os.listdir(self.directory), [])


class TopLevelTests(SynchronousTestCase):
    """Tests for the C{securemsg} command itself."""

    def test_version(self) -> None:
        """C{--version} prints securemsg's version, also after a subcommand."""
        for argv in (["--version"], ["gencert", "--version"]):
            result = _run(*argv)
            self.assertEqual(result.code, 0)
            self.assertEqual(result.stdout, f"securemsg {securemsg.__version__}\n")

    def test_help(self) -> None:
        """C{--help} lists the commands."""
        result = _run("--help")
        self.assertEqual((result.code, result.stderr), (0, ""))
        self.assertTrue(result.stdout.startswith("Usage: securemsg"))
        self.assertIn("gencert", result.stdout)

    def test_no_command(self) -> None:
        """Without a command the usage error lists the commands."""
        result = _run()
        self.assertEqual(result.code, 2)
        self.assertEqual(
            result.stderr,
            "securemsg: no command given; choose one of: gencert, chat,"
            " fingerprint, ca, check; run 'securemsg --help' for usage\n",
        )

    def test_unknown_command(self) -> None:
        """An unknown command is a one-line usage error."""
        result = _run("frobnicate")
        self.assertEqual(result.code, 2)
        self.assertEqual(result.stderr.count("\n"), 1)
        self.assertIn("frobnicate", result.stderr)

    def test_usage_error_full_stop(self) -> None:
        """
        A usage error whose message ends with a full stop (as some of
        L{usage.Options}'s own do) is printed without it, so that the hint
        after it does not follow a stray C{.;}.
        """

        class Strict(CommandOptions):
            def parseArgs(self) -> None:
                pass  # So any argument is usage.Options' own error.

        self.patch(
            SecuremsgOptions,
            "subCommands",
            [*SecuremsgOptions.subCommands, ("strict", None, Strict, "Strict.")],
        )
        result = _run("strict", "extra")
        self.assertEqual(
            (result.code, result.stderr),
            (
                2,
                "securemsg strict: Wrong number of arguments;"
                " run 'securemsg strict --help' for usage\n",
            ),
        )

    def test_commands_get_stderr(self) -> None:
        """
        Every command, one inside a group too (as in C{securemsg ca issue}),
        writes what is not its output to the stderr L{main} is given, not
        to C{sys.stderr}.
        """

        class Leaf(CommandOptions):
            def run(self, stdout: TextIO) -> int:
                self.stderr.write("to stderr\n")
                return 0

        class Group(CommandOptions):
            subCommands: ClassVar[list[tuple[str, None, type[Leaf], str]]] = [
                ("leaf", None, Leaf, "Leaf.")
            ]

            def run(self, stdout: TextIO) -> int:
                command: CommandOptions = self.subOptions
                return command.run(stdout)

        self.patch(
            SecuremsgOptions,
            "subCommands",
            [
                *SecuremsgOptions.subCommands,
                ("leaf", None, Leaf, "Leaf."),
                ("group", None, Group, "Group."),
            ],
        )
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        for argv in (["leaf"], ["group", "leaf"]):
            result = _run(*argv)
            self.assertEqual((result.code, result.stderr), (0, "to stderr\n"), argv)
        self.assertEqual(stderr.getvalue(), "")

    def test_options_classes(self) -> None:
        """
        C{gencert} is registered as a subcommand, and its defaults parse
        into typed values.
        """
        self.assertIn(
            "gencert", [command[0] for command in SecuremsgOptions.subCommands]
        )
        options = GencertOptions()
        options.parseOptions([])
        self.assertEqual(
            {key: options[key] for key in ("cert", "key", "rsa", "days", "host")},
            {
                "cert": "certificate.pem",
                "key": "private.key",
                "rsa": None,
                "days": 365,
                "host": [],
            },
        )
        self.assertFalse(options["force"])

    def test_python_dash_m(self) -> None:
        """
        C{python -m securemsg gencert} works in a subprocess and writes the
        default C{certificate.pem} and C{private.key} into its working
        directory.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        source = str(Path(securemsg.__file__).resolve().parent.parent)
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [source, environment.get("PYTHONPATH")])
        )
        completed = subprocess.run(
            [sys.executable, "-m", "securemsg", "gencert"],
            cwd=directory,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(
            sorted(os.listdir(directory)), ["certificate.pem", "private.key"]
        )
        self.assertEqual(_mode(directory / "private.key"), 0o600)
        self.assertIn("twistd -n securemsg --cert certificate.pem\n", completed.stdout)


class OptionOrderTests(SynchronousTestCase):
    """
    Options may come after a command's arguments, as in most tools.
    """

    def test_options_after_argument(self) -> None:
        """C{chat HOST --name X} parses --name; C{--} still ends options."""
        options = SecuremsgOptions()
        options.parseOptions(
            ["chat", "example.org:1234", "--name", "alice", "--reconnect"]
        )
        self.assertEqual(
            (options.subOptions.host, options.subOptions.port), ("example.org", 1234)
        )
        self.assertEqual(options.subOptions["name"], "alice")
        self.assertTrue(options.subOptions["reconnect"])
        options = SecuremsgOptions()
        options.parseOptions(["fingerprint", "--", "-odd-name.pem"])
        self.assertEqual(options.subOptions.target, "-odd-name.pem")

    def test_short_option_with_value(self) -> None:
        """A short option that takes a value keeps it."""
        options = SecuremsgOptions()
        options.parseOptions(["chat", "host", "-n", "bob"])
        self.assertEqual(options.subOptions["name"], "bob")


class GencertKeyPlacementTests(SynchronousTestCase):
    """
    Without --key, gencert puts the key where the server will look for it.
    """

    def test_key_beside_certificate(self) -> None:
        """The default key goes beside --cert, not into the current directory."""
        directory = Path(self.mktemp())
        (directory / "etc").mkdir(parents=True)
        stdout, stderr = io.StringIO(), io.StringIO()
        code = main(
            ["gencert", "--cert", str(directory / "etc" / "server.pem")],
            stdout,
            stderr,
        )
        self.assertEqual(code, 0, stderr.getvalue())
        self.assertTrue((directory / "etc" / "private.key").exists())
        self.assertNotIn("--key", stdout.getvalue())
