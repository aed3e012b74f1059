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
    extra = {n for n in named - {"python", "pip", "cuda-version", "pycocotools"}
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
