"""
Check a real securemsg server against Mozilla's TLS guidelines with sslyze.

What it does, in order:

 1. makes a fresh temporary directory and, with the project's own
    L{securemsg.tls.certs} (what C{securemsg gencert} uses), a self-signed
    certificate and unencrypted key in it: ECDSA P-256 unless C{--rsa} is
    given, valid for 365 days (90 days for C{--profile modern}, whose rules
    allow no more);
 2. starts C{twistd -n securemsg} (Twisted's C{twistd}, run by this same
    Python) listening on a free port of 127.0.0.1 only, with C{PYTHONPATH}
    set to the repository root so the plugin in C{twisted/plugins/} is
    found, C{--tls-min 1.3} for the modern profile, and the connection
    limits per address raised (C{SCANNER_LIMITS}: sslyze opens many
    connections at once);
 3. waits for the server's C{securemsg listening on 127.0.0.1:PORT} line;
 4. runs C{sslyze --mozilla_config PROFILE --certinfo_ca_file CERT
    127.0.0.1:PORT} and prints sslyze's compliance verdict lines;
 5. stops the server with SIGTERM (always, whatever happened) and removes
    the temporary directory.

Why C{--certinfo_ca_file}: sslyze's Mozilla checker fails any certificate
that does not validate against a trust store
(C{certificate_path_validation}), and a self-signed certificate validates
against none of sslyze's built-in ones.  Handing sslyze the certificate as
its own trust anchor makes that rule pass honestly, as a client that pins
the certificate would; the key type, signature and lifespan rules are
checked as usual.

Run it with the project's virtualenv Python (it imports securemsg), and
sslyze from a virtualenv of its own (sslyze pins its own cryptography)::

    python3 -m venv /tmp/sslyze-venv
    /tmp/sslyze-venv/bin/pip install sslyze
    .venv/bin/python tools/check_tls.py --sslyze /tmp/sslyze-venv/bin/sslyze
    .venv/bin/python tools/check_tls.py --sslyze /tmp/sslyze-venv/bin/sslyze \\
        --profile modern

Exit status: 0 only when sslyze reports C{OK - Compliant.} for the server
(and itself exits 0); 1 when its verdict is anything else; 2 when the check
could not be run (no sslyze, the server did not start, sslyze crashed or
gave no verdict, ...).  sslyze's own exit status alone is not enough to go
by: it exits 0 when it could not connect at all.

Only ever 127.0.0.1 is scanned.  Apart from securemsg itself (for the
certificate), it uses the standard library only.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
PROFILES = ("intermediate", "modern")
DEFAULT_DAYS = {"intermediate": 365, "modern": 90}
LISTENING = re.compile(r"securemsg listening on (?P<host>[0-9.]+):(?P<port>\d+)\s*$")
# Run Twisted's twistd entry point with this very interpreter, so the server
# uses the same virtualenv as the certificate code above.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.exit(run())"


class CheckError(Exception):
    """The check could not be run; the message says why (exit status 2)."""


#: The connection limits a scanner needs (see the server's --help).
SCANNER_LIMITS = (
    "--max-per-ip",
    "1000",
    "--connect-burst",
    "1000",
    "--connect-rate",
    "1000",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Start a securemsg server on 127.0.0.1 with a fresh self-signed "
            "certificate and check it with sslyze's Mozilla TLS checker."
        )
    )
    parser.add_argument(
        "--sslyze",
        default="sslyze",
        help="sslyze executable (default: sslyze on PATH)",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="intermediate",
        help=(
            "Mozilla configuration to check against (default: intermediate); "
            "modern starts the server with --tls-min 1.3"
        ),
    )
    parser.add_argument(
        "--rsa",
        type=int,
        metavar="BITS",
        help="use an RSA key of this size (2048, 3072 or 4096) instead of ECDSA P-256",
    )
    parser.add_argument(
        "--days",
        type=int,
        help="certificate lifetime in days (default: 365; 90 for modern)",
    )
    parser.add_argument(
        "--json-out",
        metavar="FILE",
        help="also have sslyze write its full results as JSON to FILE",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print sslyze's whole report, not only its verdict",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the server to start (default: 30)",
    )
    return parser.parse_args(argv)


def find_sslyze(name: str) -> str:
    """The path of the sslyze executable C{name}, or L{CheckError}."""
    found = shutil.which(name)
    if found is None:
        raise CheckError(
            f"sslyze executable {name!r} not found; install it in a virtualenv of "
            "its own (python3 -m venv /tmp/sslyze-venv && /tmp/sslyze-venv/bin/pip "
            "install sslyze) and pass --sslyze /tmp/sslyze-venv/bin/sslyze"
        )
    return found


def sslyze_version(sslyze: str) -> str:
    """The version line of sslyze's help text, e.g. C{SSLyze version 6.3.1}."""
    result = subprocess.run(  # noqa: S603 -- argument list, no shell
        [sslyze, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    for line in result.stdout.splitlines():
        if line.startswith("SSLyze version"):
            return line.strip()
    return "SSLyze version unknown"


def make_certificate(directory: Path, rsa_bits: int | None, days: int) -> Path:
    """
    Write a new self-signed certificate and key into C{directory} with the
    project's own code, and return the certificate's path.
    """
    try:
        from securemsg.tls import certs
    except ImportError as error:
        raise CheckError(
            f"cannot import securemsg ({error}); run this script with the "
            "Python of the project's virtualenv"
        ) from None
    try:
        cert, key = certs.generate_self_signed(rsa_bits=rsa_bits, days=days)
    except ValueError as error:
        raise CheckError(str(error)) from None
    cert_path = directory / "certificate.pem"
    certs.write_certificate(cert_path, cert, force=False)
    certs.write_private_key(directory / "private.key", key, None, force=False)
    print(f"certificate: {certs.describe_certificate(cert)}", flush=True)
    return cert_path


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Copy the server's output into C{lines}, then a L{None} at its end."""
    for line in stream:
        lines.put(line)
    lines.put(None)


class Server:
    """A C{twistd -n securemsg} child process on 127.0.0.1."""

    def __init__(self, cert_path: Path, tls_min: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        env["PYTHONUNBUFFERED"] = "1"  # log lines must arrive as they are written
        # Port 0: the system picks a free port; the log line tells which.
        command = [
            sys.executable,
            "-c",
            TWISTD,
            "-n",
            "--pidfile=",
            "securemsg",
            "--cert",
            str(cert_path),
            "--tls-min",
            tls_min,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            # sslyze is one client that opens hundreds of connections, many
            # at once: within the default limits per address it is refused.
            *SCANNER_LIMITS,
        ]
        self.log: list[str] = []
        self.stopped = False
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(  # noqa: S603 -- argument list, no shell
            command,
            cwd=cert_path.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        threading.Thread(
            target=_pump, args=(self.process.stdout, self._lines), daemon=True
        ).start()

    def wait_listening(self, timeout: float) -> int:
        """
        Wait for the C{securemsg listening on 127.0.0.1:PORT} line and return
        the port.

        @raise CheckError: if the server exits or is silent for C{timeout}.
        """
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise CheckError(
                    f"the server did not report listening within {timeout:g} s"
                ) from None
            if line is None:
                self.process.wait()
                raise CheckError(
                    f"the server exited with status {self.process.returncode} "
                    "before listening"
                )
            self.log.append(line)
            match = LISTENING.search(line)
            if match is None:
                continue
            if match["host"] != LOOPBACK:
                raise CheckError(f"the server listens on {match['host']}, not loopback")
            return int(match["port"])

    def stop(self) -> None:
        """Stop the server with SIGTERM (SIGKILL if it does not go in 15 s)."""
        if self.stopped:
            return
        self.stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        while True:  # whatever it said last
            try:
                line = self._lines.get(timeout=2)
            except queue.Empty:
                break
            if line is None:
                break
            self.log.append(line)
        status = self.process.returncode
        # twistd ends itself with the signal it got once it has shut down.
        if status == -signal.SIGTERM:
            print("server stopped by SIGTERM", flush=True)
        else:
            print(f"server stopped with exit status {status}", flush=True)


def verdict_lines(report: str) -> list[str]:
    """
    sslyze's connectivity line (C{127.0.0.1:PORT => 127.0.0.1}, or the error
    that stopped it) and its compliance section.
    """
    lines = report.splitlines()
    connectivity = [line for line in lines if "=>" in line]
    for index, line in enumerate(lines):
        if "COMPLIANCE AGAINST TLS CONFIGURATION" in line:
            section = [text for text in lines[index:] if text.strip()]
            return [*connectivity, *section]
    return [*connectivity, "(sslyze printed no compliance verdict)"]


def run_sslyze(
    sslyze: str,
    profile: str,
    cert_path: Path,
    port: int,
    json_out: str | None,
    verbose: bool,
) -> bool:
    """Scan 127.0.0.1:C{port}; print the verdict; return whether compliant."""
    target = f"{LOOPBACK}:{port}"
    command = [
        sslyze,
        "--mozilla_config",
        profile,
        "--certinfo_ca_file",
        str(cert_path),
    ]
    if json_out is not None:
        command += ["--json_out", json_out]
    command.append(target)
    print("running:", " ".join(command), flush=True)
    try:
        result = subprocess.run(  # noqa: S603 -- argument list, no shell
            command, capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        raise CheckError("sslyze did not finish within 600 s") from None
    report = result.stdout
    print(report if verbose else "\n".join(verdict_lines(report)), flush=True)
    if "COMPLIANCE AGAINST TLS CONFIGURATION" not in report:
        # sslyze crashed, or could not connect (it then exits 0 all the same).
        if result.stderr:
            print(result.stderr.rstrip(), file=sys.stderr)
        raise CheckError(
            f"sslyze (exit status {result.returncode}) gave no compliance verdict"
        )
    compliant_line = f"{target}: OK - Compliant."
    return result.returncode == 0 and any(
        line.strip() == compliant_line for line in report.splitlines()
    )


def _exit_on_signal(signum: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit, so that the server is stopped on the way."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    days = args.days if args.days is not None else DEFAULT_DAYS[args.profile]
    tls_min = "1.3" if args.profile == "modern" else "1.2"
    try:
        sslyze = find_sslyze(args.sslyze)
        print(f"{sslyze_version(sslyze)} ({sslyze})", flush=True)
        with tempfile.TemporaryDirectory(prefix="securemsg-tls-check-") as tmp:
            cert_path = make_certificate(Path(tmp), args.rsa, days)
            server = Server(cert_path, tls_min)
            try:
                try:
                    port = server.wait_listening(args.timeout)
                except CheckError:
                    server.stop()
                    if server.log:
                        print("server log:", "".join(server.log), file=sys.stderr)
                    raise
                print(
                    f"server listening on {LOOPBACK}:{port} (--tls-min {tls_min})",
                    flush=True,
                )
                compliant = run_sslyze(
                    sslyze, args.profile, cert_path, port, args.json_out, args.verbose
                )
            finally:
                server.stop()
    except CheckError as error:
        print(f"check_tls: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("check_tls: interrupted", file=sys.stderr)
        return 130
    print(
        f"result: {'COMPLIANT' if compliant else 'NOT COMPLIANT'} with Mozilla "
        f"{args.profile}",
        flush=True,
    )
    return 0 if compliant else 1


if __name__ == "__main__":
    sys.exit(main())
