"""Tests for notebook 04's explorer (causal_wsss.widgets.CamExplorer, pair_stats), on CAMs built from the ground truth."""

from __future__ import annotations

import math
import re

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from causal_wsss import widgets as W
from causal_wsss.cam import CamCache, ImageCams
from causal_wsss.config import resolve
from causal_wsss.data import build_dataset
from causal_wsss.data.synthetic import generate_synthetic
from causal_wsss.errors import ConfigError

BG_CAM = 0.3  # CAM value every class map takes on the background in the fake run


def test_pair_stats_by_hand():
    # 2 foreground classes on a 2x4 image; row 0: class 1 object, row 1: background, last pixel void
    mask = np.array([[1, 1, 2, 0], [0, 0, 0, 255]], np.uint8)
    cams = torch.zeros(2, 2, 4)
    cams[0] = torch.tensor([[1.0, 0.8, 0.0, 0.4], [0.2, 0.1, 0.0, 0.9]])
    s = W.pair_stats(cams, mask, 1, threshold=0.3)
    # prediction at 0.3: class 1 on (0,0), (0,1), (0,3) and the void (1,3) (not scored)
    assert s.iou == pytest.approx(2 / 3)
    mass = 1.0 + 0.8 + 0.4 + 0.2 + 0.1  # the void pixel's 0.9 is not counted
    assert s.leakage_background == pytest.approx((0.4 + 0.2 + 0.1) / mass)
    assert s.leakage_cooccur == pytest.approx(0.0)
    assert s.leakage == pytest.approx(0.7 / mass)
    cams[0, 0, 2] = 0.5  # now some mass on the class-2 object
    s = W.pair_stats(cams, mask, 1, threshold=0.3)
    assert s.leakage_cooccur == pytest.approx(0.5 / (mass + 0.5))
    assert s.iou == pytest.approx(2 / 4)  # (0, 2) predicted as class 1 too
    assert math.isnan(W.pair_stats(torch.zeros(2, 2, 4), mask * 0, 2, 0.3).iou)
    with pytest.raises(ConfigError, match="outside"):
        W.pair_stats(cams, mask, 3, 0.3)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A round-0 run folder whose cached CAMs are the ground truth: 1 on each present class's
    pixels, BG_CAM on the background, 0 on other objects and on void."""
    tmp = tmp_path_factory.mktemp("run04")
    generate_synthetic(tmp / "synth", n_train=8, n_val=2, rho=0.9, seed=0, size=64)
    cfg = resolve("smoke", [f"data.root={tmp / 'synth'}", "data.dataset=synthetic"], rounds=0)
    out = tmp / "run"
    cfg.save(out / "config.json")
    ds = build_dataset("synthetic", tmp / "synth", "train")
    cache = CamCache(out / "round_0" / "cams")
    labels = ds.label_matrix()
    for i, name in enumerate(ds.names):
        mask = torch.from_numpy(ds.load_mask(i).astype(np.int64))
        keys = torch.from_numpy(np.flatnonzero(labels[i]))
        maps = torch.stack([(mask == k + 1).float() + BG_CAM * (mask == 0).float() for k in keys])
        cache.put(name, ImageCams(keys, maps))
    return out, ds


@pytest.fixture(scope="module")
def explorer(run_dir):
    return W.CamExplorer(run_dir[0])


def _expected(ds, i: int, label: int) -> dict[str, float]:
    mask = ds.load_mask(i)
    obj, bg = float((mask == label).sum()), float((mask == 0).sum())
    return {"leakage": BG_CAM * bg / (obj + BG_CAM * bg), "obj": obj, "bg": bg}


def test_explorer_loads_every_image_with_its_classes_and_context(explorer, run_dir):
    _, ds = run_dir
    assert explorer.names == list(ds.names)
    for img in (m for m in ds.meta["images"] if m["split"] == "train"):
        assert set(explorer.classes_of(img["name"])) == {o["class"] for o in img["objects"]}
        assert explorer.images[img["name"]].context == img["context"]


def test_stats_match_hand_computation(explorer, run_dir):
    _, ds = run_dir
    for i, name in enumerate(ds.names[:4]):
        for cls in explorer.classes_of(name):
            label = ds.classes.index(cls)
            e = _expected(ds, i, label)
            above = explorer.stats(name, cls, 0.5)  # background CAM 0.3 <= t: exact masks
            assert above.iou == pytest.approx(1.0)
            assert above.leakage == pytest.approx(e["leakage"], rel=1e-3)  # float16 cache
            assert above.leakage_cooccur == pytest.approx(0.0, abs=1e-6)
            below = explorer.stats(name, cls, 0.2)  # the whole background joins the class
            if len(explorer.classes_of(name)) == 1:
                assert below.iou == pytest.approx(e["obj"] / (e["obj"] + e["bg"]))


def test_figure_line_and_fallback_class(explorer, run_dir):
    _, ds = run_dir
    name = ds.names[0]
    cls = explorer.classes_of(name)[0]
    fig, line = explorer.figure(name, cls, 0.5)
    s = explorer.stats(name, cls, 0.5)
    context = explorer.images[name].context
    assert line == (f"image={name} class={cls} t=0.50 IoU={s.iou:.2f} leakage={s.leakage:.2f} "
                    f"(objects {s.leakage_cooccur:.2f}, background '{context}' "
                    f"{s.leakage_background:.2f})")
    assert len(fig.axes) == 4 and fig.axes[3].images  # ground truth drawn
    plt.close(fig)
    absent = next(c for c in ("aeroplane", "bird", "boat", "car", "horse", "person")
                  if c not in explorer.classes_of(name))
    fig, line = explorer.figure(name, absent, 0.5, show_gt=False)
    assert f"class={cls} " in line and not fig.axes[3].images
    plt.close(fig)
    with pytest.raises(ConfigError, match="not loaded"):
        explorer.figure("nope", cls, 0.5)


def test_show_prints_and_widget_reacts(explorer, run_dir, capsys):
    _, ds = run_dir
    before = plt.get_fignums()
    line = explorer.show(ds.names[1], explorer.classes_of(ds.names[1])[0], 0.15)
    assert line in capsys.readouterr().out and plt.get_fignums() == before
    box = explorer.widget(threshold=0.15)
    image, cls = box.children[0].children
    slider, gt = box.children[1].children
    assert isinstance(slider, widgets.FloatSlider) and isinstance(gt, widgets.Checkbox)
    assert re.search(rf"image={ds.names[0]} class=\w+ t=0\.15 IoU=", capsys.readouterr().out)
    image.value = ds.names[2]
    assert list(cls.options) == explorer.classes_of(ds.names[2])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("image=")]
    assert lines[-1].startswith(f"image={ds.names[2]} class={cls.value} t=0.15 ")
    slider.value = 0.4
    assert f"image={ds.names[2]} class={cls.value} t=0.40" in capsys.readouterr().out


def test_sweep_leakage_and_mass_shares(explorer, run_dir):
    _, ds = run_dir
    sweep = explorer.sweep()
    assert sweep.at(0.5).miou == pytest.approx(1.0)  # CAMs equal the ground truth above 0.3
    best_t, best = sweep.best()
    assert best == pytest.approx(1.0) and 0.3 <= best_t < 1.0
    assert sweep.at(0.15).miou < 1.0
    leak = explorer.leakage()
    pairs = [(i, ds.classes.index(c)) for i, n in enumerate(ds.names)
             for c in explorer.classes_of(n)]
    assert leak["pairs"] == len(pairs)
    expected = np.mean([_expected(ds, i, label)["leakage"] for i, label in pairs])
    assert leak["leakage"] == pytest.approx(expected, rel=1e-3)
    shares, rows, cols = explorer.mass_shares()
    np.testing.assert_allclose(shares.sum(1), 1.0, atol=1e-6)
    contexts = {img["context"] for img in ds.meta["images"] if img["split"] == "train"}
    assert cols == rows + [f"bg: {c}" for c in sorted(contexts)]
    for r, cls in enumerate(rows):
        label = ds.classes.index(cls)
        mine = [(i, _expected(ds, i, label)) for i, lab in pairs if lab == label]
        assert shares[r, r] == pytest.approx(np.mean([1 - e["leakage"] for _, e in mine]),
                                             rel=1e-3)
        assert shares[r, :len(rows)].sum() == pytest.approx(shares[r, r], abs=1e-6)
        per_class = leak["per_class"][cls]
        assert per_class["leakage_background"] == pytest.approx(1 - shares[r, r], rel=1e-3)


def test_pair_table_rows_agree_with_stats(explorer, run_dir):
    _, ds = run_dir
    rows = explorer.pair_table(0.5)
    assert len(rows) == int(ds.label_matrix().sum())
    for row in rows[:5]:
        s = explorer.stats(row["image"], row["class"], 0.5)
        assert (row["iou"], row["leakage"], row["leakage_background"]) == (
            s.iou, s.leakage, s.leakage_background)
        assert row["context"] == explorer.images[row["image"]].context


def test_hidden_ground_truth_hides_iou_and_leakage(explorer, run_dir):
    _, ds = run_dir
    name = ds.names[0]
    cls = explorer.classes_of(name)[0]
    fig, line = explorer.figure(name, cls, 0.5, show_gt=False)
    assert line == f"image={name} class={cls} t=0.50"
    titles = [ax.get_title() for ax in fig.axes]
    assert not any("IoU" in t or "leak" in t for t in titles), titles
    plt.close(fig)


def test_empty_cam_reads_not_available(explorer, run_dir):
    _, ds = run_dir
    name = ds.names[0]
    item = explorer.images[name]
    saved = item.high_res.clone()
    try:
        item.high_res.zero_()
        fig, line = explorer.figure(name, explorer.classes_of(name)[0], 0.5)
        assert "leakage=n/a (empty CAM)" in line and "nan" not in line
        plt.close(fig)
    finally:
        item.high_res.copy_(saved)


def test_image_change_redraws_once(explorer, run_dir, monkeypatch):
    _, ds = run_dir
    calls = []
    original = explorer.show
    monkeypatch.setattr(explorer, "show", lambda *a: calls.append(a) or original(*a))
    box = explorer.widget(ds.names[0], threshold=0.15)
    image, cls = box.children[0].children
    assert len(calls) == 1  # the first drawing
    other = next(n for n in ds.names[1:] if explorer.classes_of(n) != explorer.classes_of(ds.names[0]))
    image.value = other
    assert len(calls) == 2, calls  # one redraw, with the new image's first class
    assert calls[-1][:2] == (other, explorer.classes_of(other)[0])
    box.children[1].children[1].value = False  # untick the ground truth
    assert len(calls) == 3 and calls[-1][3] is False
