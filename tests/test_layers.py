"""The package's architecture as tests: the import contracts of pyproject.toml hold (and fail on an
upward import), no private name crosses a file, and the light entry points do not load torch."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "causal_wsss"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

LIGHT = ("causal_wsss.cli", "causal_wsss.config", "causal_wsss.evidence", "causal_wsss.viz",
         "causal_wsss.report", "causal_wsss.results", "causal_wsss.stats")
"""Modules that must import without torch: ``causal-wsss --help``, the evidence tables and the
figures of tables answer in a fraction of a second."""

DEFERRED_OK = {"cli", "evidence", "viz"}
"""The only modules that may import package modules inside functions (torch-bound ones, so that
they stay light); everywhere else package imports sit at the top of the module."""


def _lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache"], cwd=tree,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


@pytest.mark.skipif(not LINT_IMPORTS.is_file(), reason="import-linter is not installed")
def test_the_import_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.skipif(not LINT_IMPORTS.is_file(), reason="import-linter is not installed")
def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract is not vacuous: metrics (a low layer) importing the pipeline is refused,
    named, and reported as a cycle too."""
    shutil.copytree(PACKAGE, tmp_path / "causal_wsss",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    metrics = tmp_path / "causal_wsss" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nfrom . import pipeline  # noqa: E402,F401\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "causal_wsss.metrics is not allowed to import causal_wsss.pipeline" in result.stdout
    assert "No cycles are allowed in causal_wsss" in result.stdout


def test_no_private_name_crosses_a_file():
    """``from X import _name`` and ``module._name`` are for a module's own file only (package,
    scripts and notebooks; tests may reach into the module they test)."""
    files = [p for _, p in _modules()] + sorted((ROOT / "scripts").glob("*.py")) \
        + sorted((ROOT / "notebooks").glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
    modules = {name.rsplit(".", 1)[-1] for name, _ in _modules()}
    found = []
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(
                    "causal_wsss")):
                found += [f"{path.name}: from {node.module} import {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in modules and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and path.stem != node.value.id:
                found.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert not found, "private names used outside their file:\n" + "\n".join(found)


def test_package_imports_sit_at_the_top():
    """Imports inside functions were how the old cycles were dodged; only the light modules keep
    their torch-bound imports on use (each with a comment, or cli's module docstring)."""
    found = []
    for name, path in _modules():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        guarded = {id(c) for n in ast.walk(tree) if isinstance(n, ast.If)
                   and "TYPE_CHECKING" in ast.dump(n.test) for c in n.body}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or id(node) in top or id(node) in guarded:
                continue
            if node.level or (node.module or "").startswith("causal_wsss"):
                if name.split(".")[1] not in DEFERRED_OK:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "package imports inside functions:\n" + "\n".join(found)


def test_light_entry_points_do_not_load_torch():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in LIGHT)
            + "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert "torch" not in out, out


def test_the_architecture_picture_is_the_code():
    """docs/architecture.md's layer section is what scripts/architecture.py draws from the code."""
    pytest.importorskip("grimp")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "architecture.py"),
                             "--check"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
