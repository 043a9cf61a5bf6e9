"""
The package as users get it: the wheel holds the twistd plugin and nothing
that would damage Twisted, and an installed copy is found by twistd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import securemsg

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


class WheelTests(SynchronousTestCase):
    """
    Build the wheel once from the working tree and look inside.
    """

    wheel: Path | None = None
    unpacked: Path | None = None

    def build(self) -> tuple[Path, Path]:
        if WheelTests.wheel is None or WheelTests.unpacked is None:
            out = Path(self.mktemp()).resolve()
            # Build from a copy: setuptools writes build/ and *.egg-info
            # beside the sources, which parallel test runs would share.
            source = out / "source"
            shutil.copytree(
                ROOT,
                source,
                ignore=shutil.ignore_patterns(
                    ".git", ".venv*", "_trial_temp*", "build", "*.egg-info",
                    "__pycache__", "bench",
                ),
            )  # fmt: skip
            # twistd leaves a plugin cache in a checkout; it must never ship.
            (source / "twisted" / "plugins" / "dropin.cache").write_bytes(b"stale")
            # --no-build-isolation: build with the setuptools the test extra
            # installed, without reaching a package index.
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--no-deps",
                    "--no-build-isolation",
                    "--wheel-dir",
                    str(out),
                    str(source),
                ],
                check=True,
                timeout=TIMEOUT,
                capture_output=True,
            )
            [wheel] = out.glob("securemsg-*.whl")
            unpacked = out / "unpacked"
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(unpacked)
            WheelTests.wheel, WheelTests.unpacked = wheel, unpacked
        return WheelTests.wheel, WheelTests.unpacked

    def names(self) -> list[str]:
        wheel, _ = self.build()
        with zipfile.ZipFile(wheel) as archive:
            return archive.namelist()

    def test_plugin_in_wheel(self) -> None:
        """The wheel ships the plugin module and the package."""
        names = self.names()
        self.assertIn("twisted/plugins/securemsg_plugin.py", names)
        self.assertIn("securemsg/__init__.py", names)
        self.assertIn("securemsg/py.typed", names)
        # The browser page (--web) is package data.
        self.assertIn("securemsg/server/webchat.html", names)

    def test_every_module_in_wheel(self) -> None:
        """
        The wheel holds every module of the source tree, subpackages
        included (pyproject.toml lists the packages one by one).
        """
        source = Path(securemsg.__file__).resolve().parent
        expected = {
            f"securemsg/{path.relative_to(source).as_posix()}"
            for path in source.rglob("*.py")
        }
        self.assertEqual(expected - set(self.names()), set())

    def test_nothing_that_overwrites_twisted(self) -> None:
        """
        No __init__.py under twisted/ (it would replace Twisted's own) and
        no dropin.cache anywhere.
        """
        names = self.names()
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertEqual([n for n in names if n.endswith("dropin.cache")], [])
        self.assertEqual([n for n in names if n.startswith("tests/")], [])

    def test_installed_plugin_is_found(self) -> None:
        """
        With the wheel's files on the path, outside the checkout, twistd
        lists securemsg, and the wheel's plugin folder is one twistd scans.
        (Where securemsg is also installed, as in CI, Twisted's own plugin
        folder comes first, so either copy may be the one imported.)
        """
        _, unpacked = self.build()
        elsewhere = Path(self.mktemp()).resolve()
        elsewhere.mkdir()
        environment = dict(os.environ, PYTHONPATH=str(unpacked), COLUMNS="80")
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "--help",
            ],
            cwd=elsewhere,
            env=environment,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        self.assertIn("securemsg", result.stdout)
        located = subprocess.run(
            [
                sys.executable,
                "-c",
                "from twisted.plugin import getPlugins\n"
                "from twisted.application.service import IServiceMaker\n"
                "import twisted.plugins\n"
                "names = [m.tapname for m in getPlugins(IServiceMaker)]\n"
                "print(names.count('securemsg'))\n"
                "print(*twisted.plugins.__path__, sep='\\n')",
            ],
            cwd=elsewhere,
            env=environment,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        ).stdout.splitlines()
        self.assertEqual(located[0], "1")
        self.assertIn(str(unpacked / "twisted" / "plugins"), located[1:])

    def test_console_script_declared(self) -> None:
        """The wheel declares the securemsg command."""
        _, unpacked = self.build()
        [entry_points] = unpacked.glob("securemsg-*.dist-info/entry_points.txt")
        self.assertIn("securemsg = securemsg.admin.cli:main", entry_points.read_text())
