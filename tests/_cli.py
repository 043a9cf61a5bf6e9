"""
Running the C{securemsg} command in process, for the command tests.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from securemsg.admin.cli import main


class Result:
    """What one L{main} call did: its exit code and its output streams."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        self.lines = stdout.splitlines()

    def __repr__(self) -> str:
        return f"<exit {self.code}\n{self.stdout}{self.stderr}>"


def run(*argv: str) -> Result:
    """Call L{main} with C{argv}, capturing stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


def mode(path: str | Path) -> int:
    """The permission bits of C{path}."""
    return stat.S_IMODE(os.stat(path).st_mode)
