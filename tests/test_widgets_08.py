"""Notebook 08's and the demo's views of several runs: viz.run_cam_arrays,
viz.plot_cams_of_runs, widgets.RunCamsExplorer, report.format_rounds_table."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from fixtures import InMemoryDataset

from causal_wsss.cam import CamCache, ImageCams
from causal_wsss.errors import ConfigError, DataError
from causal_wsss.report import format_report_table, format_rounds_table
from causal_wsss.viz import overlay_cam, plot_cams_of_runs, run_cam_arrays
from causal_wsss.widgets import RunCamsExplorer

CLASSES = ("background", "boat", "horse", "person")


def _dataset():
    h, w = 4, 6
    rider = np.zeros((h, w), np.uint8)
    rider[:, :3] = 2  # horse: 12 pixels
    rider[:2, 3:] = 3  # person: 6 pixels
    boat = np.zeros((h, w), np.uint8)
    boat[2:, :] = 1  # boat: 12 pixels
    both = np.zeros((h, w), np.uint8)
    both[:2, :2], both[2:, 2:4] = 1, 2
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(3)]
    labels = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 1]], dtype=bool)  # "empty", boat, horse+person
    labels[0] = [1, 1, 0]  # boat and horse: two classes, not a pair
    return InMemoryDataset(["x", "b", "r"], images, [both, boat, rider], labels, CLASSES)


@pytest.fixture
def runs(tmp_path):
    """Two run folders: round 0 and round 1 of one, round 1 of another; rider image only."""
    ds = _dataset()
    rider = ds.load_mask(2)
    horse_spread = np.ones(rider.shape, np.float32)  # all 24 pixels: leakage 12 / 24
    horse_exact = (rider == 2).astype(np.float32)  # on the horse: leakage 0
    person = (rider == 3).astype(np.float32)
    for run, r, horse in [("a", 0, horse_spread), ("a", 1, horse_spread), ("b", 1, horse_exact)]:
        cache = CamCache(tmp_path / run / f"round_{r}" / "cams")
        cache.put("r", ImageCams(torch.tensor([1, 2]), torch.from_numpy(np.stack([horse, person]))))
    sources = {"round 0": (tmp_path / "a", 0), "CONTA": (tmp_path / "a", 1),
               "paste": (tmp_path / "b", 1)}
    return ds, sources, {"spread": horse_spread, "exact": horse_exact, "person": person}


def test_run_cam_arrays_reads_each_source_for_the_picked_class(runs):
    ds, sources, maps = runs
    arrays = run_cam_arrays(sources, ds, [("r", "horse"), ("r", "person")])
    assert arrays["titles"] == ["r: horse", "r: person"]
    np.testing.assert_array_equal(arrays["cams"]["round 0"][0], maps["spread"])
    np.testing.assert_array_equal(arrays["cams"]["paste"][0], maps["exact"])
    np.testing.assert_array_equal(arrays["cams"]["CONTA"][1], maps["person"])
    assert arrays["keys"] == [1, 2]
    with pytest.raises(ConfigError, match="does not have"):
        run_cam_arrays(sources, ds, [("nope", "horse")])
    with pytest.raises(ConfigError, match="does not have"):
        run_cam_arrays(sources, ds, [("r", "unicorn")])
    fig = plot_cams_of_runs(arrays, classes=CLASSES)
    # rows image, truth, 3 sources; 2 columns; plus the colour bar
    assert len(fig.axes) == 5 * 2 + 1
    assert "CAM" in fig.axes[-1].get_ylabel()  # plot_cam_grid's colour bar
    plt.close(fig)


def test_explorer_leakage_by_hand_and_widget(runs, capsys):
    ds, sources, maps = runs
    ex = RunCamsExplorer.from_runs(sources, ds, [("r", "horse"), ("r", "person")])
    np.testing.assert_allclose(ex.leakage["round 0"], [0.5, 0.0])
    np.testing.assert_allclose(ex.leakage["paste"], [0.0, 0.0])
    fig, line = ex.figure(0)
    assert line == "pick=r: horse leakage: round 0=0.50, CONTA=0.50, paste=0.00"
    img, gt, *cams = fig.axes
    assert len(cams) == 3 and "leakage 0.00" in cams[2].get_title()
    np.testing.assert_allclose(cams[2].get_images()[0].get_array(),
                               overlay_cam(ds.load_image(2), maps["exact"]), atol=1e-6)
    plt.close(fig)
    with pytest.raises(ConfigError, match="out of range"):
        ex.figure(2)
    box = ex.widget()
    dropdown = box.children[0]
    assert isinstance(dropdown, widgets.Dropdown)
    assert "pick=r: horse" in capsys.readouterr().out
    dropdown.value = 1
    assert "pick=r: person" in capsys.readouterr().out
    with pytest.raises(DataError, match="one CAM and one leakage"):
        RunCamsExplorer(ex.arrays, {"round 0": [0.1]})


def test_rounds_table_matches_the_report_table_columns():
    entry = {"round": 1, "cam_miou": 40.0, "cam_threshold": 0.15, "cam_miou_best": 45.5,
             "cam_threshold_best": 0.3, "pseudo_miou": 44.25, "seg_miou": 41.0, "leakage": 0.5,
             "leakage_uniform": 0.8, "contrast_context": 2.5, "precision_best": 0.6,
             "context_effect": 3.0, "fp_rate_preferred": 0.675}
    report = {"dataset": "voc", "preset": "cpu", "seed": 0, "rounds": [entry]}
    row = format_report_table(report).splitlines()[-1]
    table = format_rounds_table({"CONTA round 1": entry, "paste round 1": {**entry, "pseudo_miou": None,
                                                                         "fp_rate_preferred": None}},
                                title="t")
    lines = table.splitlines()
    assert lines[0] == "t" and len(lines) == 5
    assert lines[3].startswith("CONTA round 1") and lines[3].endswith(row[6:])
    assert "44.2" in lines[3] and "68%" in lines[3]
    assert "n/a" in lines[4] and lines[4].rstrip().endswith("-")
