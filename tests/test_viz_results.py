"""The results helpers of causal_wsss.viz used by notebooks 09-11: published numbers, our rows,
run reports, the paper preset's sources, and their figures."""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from causal_wsss import results, viz  # noqa: E402
from causal_wsss.config import resolve  # noqa: E402

REPORT = {"dataset": "voc", "preset": "smoke", "seed": 3, "rounds": [
    {"round": 0, "cam_miou": 40.25, "pseudo_miou": 50.5, "seg_miou": 45.0},
    {"round": 1, "cam_miou": 41.0, "pseudo_miou": 52.0, "seg_miou": 46.5},
]}


def test_every_paper_preset_key_has_a_source():
    table = results.config_sources_table(resolve("paper"))
    missing = table.index[table["source"] == "not in the source list"].tolist()
    assert missing == []
    assert set(table.index) == set(results.PAPER_PRESET_SOURCES)
    assert table.loc["cam.lr", "value"] == "0.1"
    assert table.loc["cam_infer.scales", "value"] == "(1.0, 0.5, 1.5, 2.0)"
    assert table.loc["seg.iterations", "value"] == "20000"


def test_config_sources_table_flags_unknown_sources():
    cfg = resolve("smoke")
    table = results.config_sources_table(cfg, {"seed": "mine"})
    assert table.loc["seed", "source"] == "mine"
    assert table.loc["cam.epochs", "source"] == "not in the source list"
    assert table.loc["cam.epochs", "value"] == str(cfg.cam.epochs)


def test_results_table_with_a_report():
    table = results.results_table("voc", REPORT, "measured here: smoke, seed 3, 2024-01-01")
    assert list(table.columns) == [*results.RESULT_COLUMNS.values(), "source"]
    assert table.loc["SEAM + CONTA", "seg (val)"] == 66.1
    assert table.loc["IRNet", "CAM (train)"] == 48.3
    ours = table.loc["ours + CONTA, round 1"]
    assert (ours["CAM (train)"], ours["pseudo-mask (train)"], ours["seg (val)"]) == (41.0, 52.0, 46.5)
    assert math.isnan(ours["seg (test)"])
    assert table.loc["ours, round 0 (baseline)", "source"] == "measured here: smoke, seed 3, 2024-01-01"
    assert len(table) == 4 + 2


def test_results_table_without_a_report_and_for_coco():
    table = results.results_table("coco")
    assert table.loc["ours", "source"] == "not run yet"
    assert table.loc["ours"][list(results.RESULT_COLUMNS.values())].isna().all()
    assert table.loc["IRNet* + CONTA", "seg (val)"] == 33.4
    assert math.isnan(table.loc["IRNet*", "CAM (train)"])
    with pytest.raises(ValueError, match="synthetic"):
        results.results_table("synthetic")


def test_collect_reports_reads_runs_and_the_evidence_bundle(tmp_path):
    (tmp_path / "voc_paper").mkdir()
    (tmp_path / "voc_paper" / "report.json").write_text(json.dumps(REPORT))
    (tmp_path / "evidence").mkdir()
    other = {**REPORT, "preset": "cpu", "seed": 1}
    (tmp_path / "evidence" / "reports.json").write_text(json.dumps({"0.9/1": other}))
    (tmp_path / "empty").mkdir()
    found = results.collect_reports(tmp_path)
    assert set(found) == {"voc_paper", "evidence/0.9/1"}
    report, note = found["voc_paper"]
    assert report == REPORT and note.startswith("measured here: smoke, seed 3, ")
    assert found["evidence/0.9/1"][1].startswith("measured here: cpu, seed 1, ")
    assert results.collect_reports(tmp_path / "nothing") == {}


def test_load_report_names_a_bad_file(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="report.json"):
        results.load_report(bad)
    bad.write_text(json.dumps({"rounds": []}))  # no preset
    with pytest.raises(ValueError, match="preset"):
        results.load_report(bad)


def test_plot_results_table_draws_one_bar_per_number():
    table = results.results_table("voc", REPORT)
    fig = viz.plot_results_table(table, title="VOC")
    widths = sorted(round(p.get_width(), 2) for p in fig.axes[0].patches)
    expected = sorted(round(float(v), 2) for v in
                      table[list(results.RESULT_COLUMNS.values())].to_numpy().ravel() if not np.isnan(v))
    assert widths == expected
    fig = viz.plot_results_table(results.results_table("coco"))
    assert any(t.get_text() == "not run yet" for t in fig.axes[0].texts)


def test_plot_conta_scm_marks_the_backdoor_path():
    fig = viz.plot_conta_scm()
    arrows = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]
    red = [a for a in arrows if np.allclose(a.get_edgecolor(), to_rgba("tab:red"))]
    assert len(arrows) == 5 and len(red) == 3  # X <- C -> M -> Y


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A one-CONTA-round smoke run on 16 generated 64 px images (a few seconds)."""
    import torch

    from causal_wsss.data.synthetic import generate_synthetic
    from causal_wsss.pipeline import run_experiment

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("smoke_run")
    generate_synthetic(tmp / "synth", n_train=16, n_val=4, rho=0.9, seed=0, size=64)
    cfg = resolve("smoke", [f"data.root={tmp / 'synth'}", "seg.iterations=4",
                            "cam_infer.scales=1.0"], seed=0, rounds=1)
    return run_experiment(cfg, tmp / "run", progress=False), tmp / "run"


def test_save_run_figures_writes_the_notebook_08_set(smoke_run, tmp_path):
    report, run_dir = smoke_run
    plt.close("all")
    paths = viz.save_run_figures(report, run_dir, tmp_path, "09_pascal_voc", dataset="voc",
                                 measured="measured here: smoke")
    assert [p.name for p in paths] == ["09_pascal_voc_results.png", "09_pascal_voc_rounds.png",
                                       "09_pascal_voc_cams.png"]
    assert all(p.is_file() and p.stat().st_size > 5_000 for p in paths)
    one_round = {**report, "rounds": report["rounds"][:1]}
    paths = viz.save_run_figures(one_round, run_dir, tmp_path / "b", "x")
    assert [p.name for p in paths] == ["x_rounds.png"]
    assert plt.get_fignums() == []  # every figure closed


def test_plot_run_cams_shows_baseline_and_last_round(smoke_run):
    report, run_dir = smoke_run
    fig = viz.plot_run_cams(run_dir, report, n_images=3)
    axes = fig.axes
    assert len(axes) == 4 * 3 + 1  # image, ground truth, round 0, round 1 for 3 columns; a bar
    assert axes[-1].get_ylabel() == "CAM / its maximum"
    titles = [a.get_title() for a in axes[:3]]
    if titles[0].endswith(": horse"):  # a horse-and-rider image: shown with both classes
        assert titles[1] == titles[0].replace(": horse", ": person")
    assert {a.get_ylabel() for a in axes} >= {"baseline (round 0)", "CONTA (round 1)"}
    with pytest.raises(ValueError, match="at least one CONTA round"):
        viz.plot_run_cams(run_dir, {**report, "rounds": report["rounds"][:1]})


def test_plot_thumbnails_titles_each_file(tmp_path):
    paths = []
    for name in ("a.png", "b.png", "c.png"):
        fig = viz.plot_conta_scm(title=name)
        paths.append(viz.save_figure(fig, tmp_path / name))
    fig = viz.plot_thumbnails(paths, ncols=2)
    assert [a.get_title() for a in fig.axes if a.images] == ["a.png", "b.png", "c.png"]
    assert len(fig.axes) == 4
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_thumbnails([])
