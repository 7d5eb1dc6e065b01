"""Dependencies point one way: ``detfn.models`` never imports ``detfn.data``, ``detfn.engine``
or ``detfn.apis``; ``detfn.engine`` never imports ``detfn.models`` or ``detfn.data``.

Checked twice: statically (every import statement of the package's source, lazy ones inside
functions included) and dynamically (what importing the package pulls into ``sys.modules`` of a
fresh interpreter)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "detfn.models": ("detfn.data", "detfn.engine", "detfn.apis", "experiments"),
    "detfn.engine": ("detfn.models", "detfn.data", "detfn.apis", "experiments"),
    "detfn.data": ("detfn.models", "detfn.engine", "detfn.apis", "experiments"),
}


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module an import statement of ``path`` names (``from a import b`` gives a and a.b)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _breaks(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_source_file_imports_a_forbidden_package(package):
    folder = ROOT.joinpath(*package.split("."))
    files = sorted(folder.rglob("*.py"))
    assert files
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_modules(path))
        if _breaks(name, FORBIDDEN[package])
    ]
    assert not bad, bad


@pytest.mark.parametrize("package", ["detfn.models", "detfn.engine"])
def test_importing_the_package_loads_no_forbidden_module(package):
    # detfn/__init__ imports every subpackage: load the package object without running it
    code = "\n".join(
        [
            "import importlib, pathlib, sys, types",
            f"root = pathlib.Path({str(ROOT)!r})",
            "pkg = types.ModuleType('detfn')",
            "pkg.__path__ = [str(root / 'detfn')]",
            "sys.modules['detfn'] = pkg",
            f"importlib.import_module({package!r})",
            "print('\\n'.join(m for m in sys.modules if m.startswith(('detfn', 'experiments'))))",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split()
    bad = [m for m in out if _breaks(m, FORBIDDEN[package])]
    assert not bad, bad


def test_the_check_detects_a_forbidden_import(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from detfn.data.collate import collate\n")
    assert any(_breaks(n, FORBIDDEN["detfn.models"]) for n in imported_modules(sample))
