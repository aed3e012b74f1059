"""The course notebooks: conventions, jupytext pairing, and a smoke-mode run of each one with nbclient."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

from causal_wsss.course import short_poll_client

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
CELL_TIMEOUT_S = 600


def _ids(path: Path) -> str:
    return path.name


def _listing(folder: Path) -> dict[str, int]:
    """Top-level names in ``folder`` with their modification times (empty if absent)."""
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.is_dir() else {}


def test_course_has_notebooks():
    assert NOTEBOOKS, f"no notebooks NN_name.ipynb in {NB_DIR}"
    assert {p.stem for p in NOTEBOOKS} == {p.stem for p in SOURCES}, \
        "every notebook needs its jupytext pair: run `jupytext --set-formats ipynb,py:percent`"


def test_notebooks_share_the_demo_benchmark():
    """Notebooks 02-07 and `causal-wsss demo --full` write the same `data/synth`: their
    full-size parameters must be the benchmark's, or each would regenerate the other's data."""
    import re

    from causal_wsss.constants import BENCHMARK_SIZE, BENCHMARK_TWINS

    for py in sorted(NB_DIR.glob("0[2-7]_*.py")):
        text = py.read_text()
        size = re.search(r"^SIZE = \d+ if SMOKE else (\d+)", text, re.M)
        twins = re.search(r"^TWINS = \d+ if SMOKE else (\d+)", text, re.M)
        assert size and int(size.group(1)) == BENCHMARK_SIZE, py.name
        assert twins and int(twins.group(1)) == BENCHMARK_TWINS, py.name


@pytest.mark.parametrize("py", SOURCES, ids=_ids)
def test_paired_files_in_sync(py: Path):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{py.name} has no {ipynb.name}: run `jupytext --sync {py}`"

    def cells(nb):
        return [(c.cell_type, c.source.strip()) for c in nb.cells]

    assert cells(jupytext.read(py)) == cells(jupytext.read(ipynb)), f"run: jupytext --sync {py}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_conventions(path: Path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", \
        f"{path.name}: set the kernel (`jupytext --set-kernel python3`), or JupyterLab asks for one"
    assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"
    first, second = nb.cells[0], nb.cells[1]
    assert first.cell_type == "markdown" and first.source.startswith("# "), \
        f"{path.name}: the first cell must be markdown starting with the title"
    for topic in ("learn", "Before", "Run time"):
        assert topic in first.source, f"{path.name}: the first cell should say '{topic} ...'"
    assert second.cell_type == "code" and "parameters" in second.metadata.get("tags", []), \
        f"{path.name}: the second cell must be a code cell tagged 'parameters'"
    assert "CAUSAL_WSSS_SMOKE" in second.source, f"{path.name}: parameters must read smoke mode"
    assert nb.cells[-1].cell_type == "markdown" and ".ipynb)" in nb.cells[-1].source, \
        f"{path.name}: end with what we saw and a link to the next notebook"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, \
                f"{path.name}: commit without outputs (run nbstripout {path})"
    assert "widgets" not in nb.metadata, f"{path.name}: widget state saved; run nbstripout"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_has_exercises_with_folded_solutions(path: Path):
    """One or two exercises before "What we saw", each solution folded: a code cell tagged
    ``solution`` with its source hidden (it runs with the notebook, so the smoke run checks it),
    or a ``<details>`` block."""
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    exercises = text.count("**Exercise ")
    assert 1 <= exercises <= 2, f"{path.name}: {exercises} exercises (**Exercise N.**), expected 1-2"
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    details = [c for c in nb.cells if c.cell_type == "markdown" and "<details>" in c.source]
    assert len(solutions) + len(details) >= exercises, f"{path.name}: an exercise has no solution"
    for cell in solutions:
        assert cell.cell_type == "code" and cell.metadata.get("jupyter", {}).get("source_hidden"), \
            f"{path.name}: fold the solution (jupyter={{\"source_hidden\": true}})"
    first = text.index("**Exercise ")
    assert first < text.index("## What we saw"), f"{path.name}: exercises go before 'What we saw'"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_in_smoke_mode(path: Path, python3_kernel: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CAUSAL_WSSS_SMOKE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 2 busy cores: oversubscribed torch threads crawl
    monkeypatch.delenv("CAUSAL_WSSS_DATA", raising=False)  # smoke mode makes its own stand-in
    monkeypatch.delenv("MPLBACKEND", raising=False)  # Agg would swallow every inline figure
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' temp folders land here
    nb = nbformat.read(path, as_version=4)
    before = {name: _listing(REPO / name) for name in ("figures", "data")}
    short_poll_client()(nb, timeout=CELL_TIMEOUT_S, kernel_name=python3_kernel,
                   resources={"metadata": {"path": str(NB_DIR)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), \
        f"{path.name} drew no figure (image/png output)"
    assert not [o for o in outputs if o.output_type == "error"]
    after = {name: _listing(REPO / name) for name in ("figures", "data")}
    assert after == before, f"{path.name} wrote into the repository in smoke mode; use a temp " \
                            "folder (tempfile honours TMPDIR)"
