"""The README is a first page: short, and every number it quotes is the committed table's
(docs/tables/evidence.json), so prose and tables cannot drift apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TABLES = json.loads((ROOT / "docs" / "tables" / "evidence.json").read_text())


def _signed(x: float, digits: int = 1) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")


def _interval(stat: dict, digits: int = 1) -> str:
    return f"[{_signed(stat['lo'], digits)}, {_signed(stat['hi'], digits)}]"


def test_the_readme_is_a_first_page():
    words = len(re.sub(r"```.*?```", "", README, flags=re.S).split())
    assert words <= 900, f"README.md has {words} words outside code blocks; the limit is 900"
    head = README.splitlines()[:6]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)
    assert "notebooks/" in README and "01_causal_graph.ipynb" in README


def test_every_number_the_readme_quotes_is_the_tables():
    sweep = TABLES["sweep"]
    quoted = []
    for rho in ("0.9", "0.97"):
        gap = sweep[rho]["pseudo_miou"]["interventional"]
        quoted.append(f"{gap['mean']:+.1f} {_interval(gap)}")
    primary = TABLES["primary"]
    quoted.append(f"{_signed(primary['mean'], 2)} ± {primary['sd']:.2f} {_interval(primary, 2)}")
    quoted.append(f"{primary['n']} seeds")
    rounds = TABLES["rounds"]
    for tag in ("conta@0.9", "conta@0.97", "interventional@0.97"):
        quoted.append(f"{100 * rounds[tag]['0']['fp_rate_preferred']['mean']:.0f}%")
    text = " ".join(README.replace("−", "-").split())  # line breaks and minus signs aside
    missing = [q for q in quoted if q.replace("−", "-") not in text]
    assert not missing, f"README.md lacks (or misquotes) the tables' figures: {missing}"
