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


def test_the_interventions_the_readme_quotes_are_the_tables():
    """The README's interventions bullet: context negatives at rho 0.97 (the paired gain, the
    share of the gap closed, the false positives before and after, the seeds) and, when the
    do-no-harm rows exist, its change at rho 0.5."""
    rows = TABLES.get("interventions") or {}
    row = rows.get("negatives@0.97")
    if row is None:  # before the intervention runs the README promises no numbers
        assert "closes" not in README
        return
    gain = row["paired"]["pseudo_miou"]
    closed = row["gap"]["pseudo_miou"]["closed"]
    fp = [100 * row["levels"][r]["fp_rate_preferred"]["mean"] for r in ("0", "1")]
    quoted = [f"{_signed(gain['mean'])} {_interval(gain)}",
              f"{closed['ratio']:.2f} [{closed['lo']:.2f}, {closed['hi']:.2f}]",
              f"{fp[0]:.0f}% to {fp[1]:.0f}%", f"{gain['n']} seeds"]
    from causal_wsss.evidence_tables import beyond_control

    beyond = beyond_control(row)  # "...; closes 0.15 [-0.19, 0.45] of the gap; ... -28 points [-41, -16]"
    share = beyond.split("closes ")[1].split(" of the gap")[0]
    quoted += [share, beyond.rsplit("preferred context ", 1)[1]]  # "-28 points [-41, -16]"
    low = rows.get("negatives@0.5")
    if low is not None and low["paired"]["pseudo_miou"].get("lo") is not None:
        quoted.append(f"{_signed(low['paired']['pseudo_miou']['mean'])} "
                      f"{_interval(low['paired']['pseudo_miou'])} at rho 0.5")
    text = " ".join(README.replace("−", "-").split())
    missing = [q for q in quoted if q.replace("−", "-") not in text]
    assert not missing, f"README.md lacks (or misquotes) the interventions' figures: {missing}"
    # docs/results.md section 7.2 quotes the same gain and shares
    results = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    section = " ".join(results.split("### 7.2")[1].split("## Run times")[0].replace("−", "-").split())
    missing = [q for q in (quoted[0], quoted[1], share) if q.replace("−", "-") not in section]
    assert not missing, f"docs/results.md 7.2 lacks (or misquotes) the tables' figures: {missing}"


def _run_time(seconds: float) -> str:
    """How the README's course table shows a notebook's measured wall time."""
    return f"{round(seconds)} s" if seconds < 90 else f"{round(seconds / 60)} min"


def test_the_course_table_shows_the_measured_run_times():
    times = json.loads((ROOT / "docs" / "tables" / "course_times.json").read_text())
    rows = {m.group(1): m.group(2) for m in
            re.finditer(r"^\| (\d\d) \| [^|]+ \| ([^|]+?) \|$", README, re.M)}
    assert times["notebooks"], "docs/tables/course_times.json lists no notebook"
    for name, seconds in times["notebooks"].items():
        assert rows.get(name[:2]) == _run_time(seconds), \
            f"README's course table: {name} should read {_run_time(seconds)} " \
            f"(docs/tables/course_times.json, scripts/run_course.py)"
