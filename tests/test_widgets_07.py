"""Tests for notebook 07's views: CamRoundsExplorer, viz.plot_cam_rounds and viz.plot_evidence."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from fixtures import InMemoryDataset
from matplotlib.container import ErrorbarContainer

from causal_wsss.cam import CamCache, ImageCams
from causal_wsss.errors import ConfigError, DataError
from causal_wsss.viz import overlay_cam, plot_evidence
from causal_wsss.widgets import CamRoundsExplorer

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("background", "cat", "dog", "horse")


@pytest.fixture
def run(tmp_path):
    """Two images, two rounds of cached CAMs, with leakages worked out by hand below."""
    h, w = 4, 6
    mask_a = np.zeros((h, w), np.uint8)
    mask_a[:, :2] = 1  # cat: 8 pixels
    mask_a[:, 4:] = 3  # horse: 8 pixels
    mask_a[0, 2] = 255  # one void pixel (not scored)
    mask_b = np.zeros((h, w), np.uint8)
    mask_b[:2, :2] = 2  # dog: 4 pixels
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2)]
    labels = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)
    ds = InMemoryDataset(["a", "b"], images, [mask_a, mask_b], labels, CLASSES)

    cat0 = np.ones((h, w), np.float32)  # everywhere: 8 of 23 scored units inside
    cat1 = (mask_a == 1).astype(np.float32)  # exactly on the cat: no leakage
    horse = (mask_a == 3).astype(np.float32)
    dog0 = (mask_b == 2).astype(np.float32)
    dog0[3, 4:] = 1  # 2 background pixels: leakage 2 / 6
    dog1 = np.where(mask_b == 2, 0.5, 0.0).astype(np.float32)
    dog1[2, :4] = 0.5  # 4 background pixels at 0.5: leakage 2 / 4
    for r, (cat, dog) in enumerate([(cat0, dog0), (cat1, dog1)]):
        cache = CamCache(tmp_path / f"round_{r}" / "cams")
        cache.put("a", ImageCams(torch.tensor([0, 2]), torch.from_numpy(np.stack([cat, horse]))))
        cache.put("b", ImageCams(torch.tensor([1]), torch.from_numpy(dog[None])))
    return tmp_path, ds, {"a": (cat0, cat1), "b": (dog0, dog1)}


def test_leakage_of_the_shown_class_by_hand(run):
    run_dir, ds, _ = run
    ex = CamRoundsExplorer.from_run(run_dir, ds, ["a", "b"], [0, 1])
    assert ex.rounds == [0, 1]
    np.testing.assert_allclose(ex.leakage[0], [1 - 8 / 23, 2 / 6])
    np.testing.assert_allclose(ex.leakage[1], [0.0, 0.5])
    assert ex.arrays["titles"] == ["a: cat", "b: dog"]


def test_figure_line_and_panels(run):
    run_dir, ds, cams = run
    ex = CamRoundsExplorer.from_run(run_dir, ds, ["a", "b"], [0, 1])
    fig, line = ex.figure("b", 1)
    assert line == "image=b round=1 leakage=0.50"
    img, gt, base, conta = fig.axes
    np.testing.assert_array_equal(img.get_images()[0].get_array(), ds.load_image(1))
    np.testing.assert_allclose(base.get_images()[0].get_array(),
                               overlay_cam(ds.load_image(1), cams["b"][0]), atol=1e-6)
    np.testing.assert_allclose(conta.get_images()[0].get_array(),
                               overlay_cam(ds.load_image(1), cams["b"][1]), atol=1e-6)
    assert "leakage 0.33" in base.get_title() and "leakage 0.50" in conta.get_title()
    plt.close(fig)
    fig, line = ex.figure("a", 0)  # the baseline alone
    assert line == "image=a round=0 leakage=0.65" and len(fig.axes) == 3
    plt.close(fig)
    with pytest.raises(ConfigError, match="round 5"):
        ex.figure("a", 5)
    with pytest.raises(ConfigError, match="unknown image"):
        ex.figure("zz", 0)


def test_show_and_widget(run, capsys):
    run_dir, ds, _ = run
    ex = CamRoundsExplorer.from_run(run_dir, ds, ["a", "b"], [0, 1])
    before = plt.get_fignums()
    assert ex.show("a", 1) == "image=a round=1 leakage=0.00"
    assert plt.get_fignums() == before
    capsys.readouterr()
    box = ex.widget()
    dropdown, buttons = box.children[0].children
    assert isinstance(dropdown, widgets.Dropdown) and isinstance(buttons, widgets.ToggleButtons)
    assert buttons.value == 1  # the last round by default
    assert "image=a round=1 leakage=0.00" in capsys.readouterr().out
    dropdown.value = "b"
    assert "image=b round=1 leakage=0.50" in capsys.readouterr().out
    buttons.value = 0
    assert "image=b round=0 leakage=0.33" in capsys.readouterr().out


def test_explorer_rejects_missing_masks_and_ragged_inputs(run):
    run_dir, ds, _ = run
    ds._masks[1] = None
    with pytest.raises(DataError, match="no ground-truth mask"):
        CamRoundsExplorer.from_run(run_dir, ds, ["a", "b"], [0, 1])
    ds._masks[1] = np.zeros((4, 6), np.uint8)
    ex = CamRoundsExplorer.from_run(run_dir, ds, ["a", "b"], [0, 1])
    with pytest.raises(DataError, match="one CAM and one leakage"):
        CamRoundsExplorer(["a", "b"], ex.arrays, {0: [0.1, 0.2]})


def _conta_evidence():
    spec = importlib.util.spec_from_file_location("conta_evidence", REPO / "scripts" / "conta_evidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(values: list[tuple[float, float]]) -> dict:
    keys = ("cam_miou", "cam_miou_best", "pseudo_miou", "seg_miou", "leakage",
            "leakage_background", "leakage_cooccur")
    return {"rounds": [{"round": r, **{k: (seg if k == "seg_miou" else cam) for k in keys}}
                       for r, (cam, seg) in enumerate(values)]}


def test_plot_evidence_draws_mean_and_std_over_seeds():
    reports = {"0.9/0": _report([(40.0, 30.0), (42.0, 33.0)]),
               "0.9/1": _report([(44.0, 34.0), (44.0, 31.0)]),
               "0.5/0": _report([(50.0, 20.0), (51.0, 21.0)])}
    summary = _conta_evidence().summarise(reports)
    fig = plot_evidence(summary, keys=("cam_miou_best", "seg_miou"))
    cam_ax, seg_ax = fig.axes
    by_label = {c.get_label(): c for c in seg_ax.containers if isinstance(c, ErrorbarContainer)}
    assert set(by_label) == {"rho=0.5 (1 seed)", "rho=0.9 (2 seeds)"}
    data_line, _, (bars,) = by_label["rho=0.9 (2 seeds)"].lines
    np.testing.assert_allclose(np.asarray(data_line.get_ydata(), float), [32.0, 32.0])  # seg means over seeds
    half_widths = [(seg[1][1] - seg[0][1]) / 2 for seg in bars.get_segments()]
    np.testing.assert_allclose(half_widths, [2.0, 1.0])  # population std of (30, 34), (33, 31)
    cam_line = {c.get_label(): c for c in cam_ax.containers}["rho=0.9 (2 seeds)"].lines[0]
    np.testing.assert_allclose(np.asarray(cam_line.get_ydata(), float), [42.0, 43.0])
    plt.close(fig)
