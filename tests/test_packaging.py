"""pyproject.toml and environment.yml name the same packages; the command line answers --help."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch-gpu", "pillow": "pillow"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_covers_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {_name(d) for d in dep["pip"] if not d.startswith("-")}
        else:
            conda.add(_name(dep))
    named = conda | pip
    missing = {n for n in core if CONDA_NAMES.get(n, n) not in named}
    assert not missing, f"environment.yml lacks {sorted(missing)}"
    # gperftools: tcmalloc, a C library the command line preloads (no Python package)
    extra = {n for n in named - {"python", "pip", "cuda-version", "pycocotools", "gperftools"}
             if n not in {CONDA_NAMES.get(c, c) for c in core}}
    assert not extra, f"environment.yml has packages pyproject does not name: {sorted(extra)}"
    assert any("-e ." in str(d) for d in env["dependencies"][-1]["pip"])


def test_cli_help_and_bad_key():
    out = subprocess.run([sys.executable, "-m", "causal_wsss", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for cmd in ("synth", "stats", "run", "demo"):
        assert cmd in out
    bad = subprocess.run([sys.executable, "-m", "causal_wsss", "config", "--preset", "cpu",
                          "cam.epochz=1"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "cam.epochz" in bad.stderr and "Traceback" not in bad.stderr


# Notes that live outside the repository must not be cited: users do not have them. Built by
# concatenation so that this file does not match itself.
_OUTSIDE = "shared" + "/"
FORBIDDEN = ["../" + "shared", *(_OUTSIDE + name + ".md"
                                 for name in ("method", "practical", "esol", "style"))]
SHIPPED = ("causal_wsss", "notebooks", "docs", "tests", "scripts", "bench", "README.md",
           "pyproject.toml", "Makefile", "environment.yml")


def _shipped_files() -> list[Path]:
    """Files under SHIPPED that git tracks or would add (not ignored); every file there without git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard", "--", *SHIPPED], cwd=ROOT,
                             capture_output=True, check=True).stdout
        files = [ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = [p for top in SHIPPED for p in ([ROOT / top] if (ROOT / top).is_file()
                                                else (ROOT / top).rglob("*"))
                 if p.is_file() and "__pycache__" not in p.parts]
    return [p for p in files if p.is_file()]


def test_no_reference_to_notes_outside_the_project():
    files = _shipped_files()
    assert ROOT / "docs" / "method.md" in files
    found = [f"{p.relative_to(ROOT)}: {bad}" for p in files
             for bad in FORBIDDEN if bad.encode() in p.read_bytes()]
    assert not found, "cite docs/method.md or state the fact instead:\n" + "\n".join(found)


def test_method_reference_has_the_cited_sections():
    """Docstrings and notebooks cite "method.md" by section number (1 to 8)."""
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    numbers = {int(n) for n in re.findall(r"^## (\d+)\. \S", text, flags=re.MULTILINE)}
    missing = {1, 2, 3, 4, 5, 6, 7, 8} - numbers
    assert not missing, f"docs/method.md lacks the headings of sections {sorted(missing)}"
