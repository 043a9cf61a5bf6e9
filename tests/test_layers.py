"""
The package's layers: imports run one way only, importing the client does
not load the server, and every module names tests that exist.

One folder per job (README, "Code layout"): protocol <- core <- server <-
tap; tls imports only protocol; client imports protocol and tls; admin may
import anything and nothing imports admin.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import securemsg

PACKAGE = Path(securemsg.__file__).resolve().parent
TESTS = Path(__file__).resolve().parent

#: What each layer may import of ours besides itself.  C{_version} is a
#: leaf that anyone may import.  C{__main__} is C{python -m securemsg}, the
#: command, so it sits with admin.
ALLOWED: dict[str, frozenset[str]] = {
    "protocol": frozenset(),
    "core": frozenset({"protocol"}),
    "tls": frozenset({"protocol"}),
    "server": frozenset({"protocol", "core", "tls"}),
    "cluster": frozenset({"protocol", "core"}),
    "tap": frozenset({"protocol", "core", "tls", "server", "cluster"}),
    "client": frozenset({"protocol", "tls"}),
    "admin": frozenset(
        {"protocol", "core", "tls", "server", "cluster", "tap", "client", "securemsg"}
    ),
    "__main__": frozenset({"admin"}),
    # securemsg/__init__ imports the server only inside __getattr__ (and for
    # type checkers), which the scan allows below; at run time when it is
    # imported, only the version.
    "__init__": frozenset(),
    "_version": frozenset(),
}

#: Imports that still run against the layers, each with the follow-up that
#: removes it: (importing module, imported module).  Empty: keep it so.
KNOWN_EXCEPTIONS: frozenset[tuple[str, str]] = frozenset()


def layer_of(module: str) -> str:
    """
    The layer of C{module} (a dotted name in securemsg): its subpackage, or
    for a top-level module its own name (C{tap}, C{__init__}, ...).
    """
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "securemsg"


def source_modules() -> Iterator[tuple[str, Path]]:
    """Every module under src/securemsg, as (dotted name, path)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports_of(module: str, path: Path) -> Iterator[tuple[str, bool]]:
    """
    The securemsg modules that C{module} imports, each with whether the
    import is lazy: inside a function (it runs only when that is called) or
    under C{if TYPE_CHECKING:} (it never runs).
    """
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = (
                in_function
                or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                or (
                    isinstance(child, ast.If)
                    and isinstance(child.test, ast.Name)
                    and child.test.id == "TYPE_CHECKING"
                )
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "securemsg":
                        yield alias.name, inner
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join([*base, *filter(None, [child.module])])
                else:
                    target = child.module or ""
                if target.split(".")[0] != "securemsg":
                    continue
                if target == "securemsg":
                    # from securemsg import tls: the subpackage (or a name
                    # of securemsg/__init__, which is the root).
                    for alias in child.names:
                        yield f"securemsg.{alias.name}", inner
                else:
                    yield target, inner
            yield from visit(child, inner)

    yield from visit(tree, False)


def layer_problems() -> list[str]:
    """Every import of ours that the table does not allow, one line each."""
    problems = []
    for module, path in source_modules():
        mine = "__init__" if module == "securemsg" else layer_of(module)
        for target, lazy in imports_of(module, path):
            theirs = layer_of(target)
            if theirs in ("_version", mine):
                continue
            if mine == "__init__" and theirs == "server" and lazy:
                continue
            if theirs in ALLOWED[mine]:
                continue
            if (module, target) in KNOWN_EXCEPTIONS:
                continue
            problems.append(f"{module} imports {target} ({mine} -> {theirs})")
    return problems


class ImportDirectionTests(SynchronousTestCase):
    """
    A scan of every import statement under src/securemsg against the
    layers' table.
    """

    def test_modules_found(self) -> None:
        """
        The scan sees every layer (so that a broken scan cannot pass by
        finding nothing).
        """
        layers = {layer_of(module) for module, _ in source_modules()}
        self.assertTrue(
            {"protocol", "core", "tls", "server", "client", "admin"} <= layers,
            layers,
        )

    def test_imports_run_one_way(self) -> None:
        """
        No module imports a layer that the table does not allow it; each
        offending import is named.
        """
        self.assertEqual(layer_problems(), [])

    def test_scan_catches_an_upward_import(self) -> None:
        """
        The scan reports an import against the layers (a core module that
        imported the server), naming both modules.
        """
        path = Path(self.mktemp())
        path.write_text(
            "from securemsg.server.factory import ChatServerFactory\n"
            "from securemsg.protocol import wire\n"
            "def later():\n"
            "    from securemsg.admin import ca\n"
        )
        found = list(imports_of("securemsg.core.example", path))
        self.assertEqual(
            found,
            [
                ("securemsg.server.factory", False),
                ("securemsg.protocol", False),
                ("securemsg.admin", True),
            ],
        )


def modules_loaded_by(statement: str) -> set[str]:
    """
    The modules a fresh interpreter has loaded after C{statement}: what it
    costs a program to do just that.
    """
    env = dict(os.environ)
    source = str(PACKAGE.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode:
        raise AssertionError(result.stderr)
    return set(result.stdout.split())


class ImportCostTests(SynchronousTestCase):
    """
    What importing a piece of securemsg loads, in a fresh interpreter.
    """

    def test_package_loads_only_the_version(self) -> None:
        """
        C{import securemsg} loads no submodule but C{_version}: the
        embedding names are imported on first use.
        """
        loaded = modules_loaded_by("import securemsg")
        ours = {name for name in loaded if name.startswith("securemsg.")}
        self.assertEqual(ours, {"securemsg._version"})

    def test_lazy_names_still_work(self) -> None:
        """
        C{securemsg.ChatServerFactory} is the server's factory, imported
        on first use.
        """
        from securemsg.server import ChatServerFactory

        self.assertIs(securemsg.ChatServerFactory, ChatServerFactory)
        self.assertRaises(AttributeError, getattr, securemsg, "no_such_name")

    def test_client_does_not_load_the_server(self) -> None:
        """
        Importing the client API loads neither the server, nor the history
        store (nor SQLite), nor the command line and its CA.
        """
        loaded = modules_loaded_by("import securemsg.client")
        self.assertIn("securemsg.client.api", loaded)
        unwanted = sorted(
            name
            for name in loaded
            if name == "sqlite3"
            or name == "securemsg.core.history"
            or re.match(r"securemsg\.(server|admin)(\.|$)", name)
        )
        self.assertEqual(unwanted, [])


class TestCaseNameTests(SynchronousTestCase):
    """
    Each module's C{test-case-name} header names test modules that exist.
    """

    def test_names_exist(self) -> None:
        """
        Every name in a C{# -*- test-case-name: ... -*-} header is a module
        in tests/.
        """
        header = re.compile(r"test-case-name:\s*([\w., ]+?)\s*-\*-")
        missing = []
        for module, path in source_modules():
            match = header.search(path.read_text().split("\n", 1)[0])
            if match is None:
                continue
            for name in match.group(1).split(","):
                name = name.strip()
                if not (TESTS / f"{name.removeprefix('tests.')}.py").exists():
                    missing.append(f"{module}: {name}")
        self.assertEqual(missing, [])
