"""Interventions (``context.intervention``): the paste and context-negative operations on known
inputs, their banks built from the previous round's pseudo-masks only, the registry's errors,
and each one end to end in the smoke preset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from causal_wsss.config import resolve
from causal_wsss.data.registry import build_dataset
from causal_wsss.data.synthetic import generate_synthetic
from causal_wsss.errors import ConfigError, DataError
from causal_wsss.interventions import INTERVENTIONS, get_intervention
from causal_wsss.interventions.appearance import cluster_contexts, pooled_features
from causal_wsss.interventions.bank import CropBank
from causal_wsss.interventions.negatives import (
    NegativesView,
    audit_negative_bank,
    background_windows,
    build_folder_bank,
    build_negative_bank,
    extra_samples,
)
from causal_wsss.interventions.paste import (
    PasteTransform,
    build_paste_bank,
    cut_object,
    paste_object,
)
from causal_wsss.pipeline import run_experiment


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(out, n_train=24, n_val=8, rho=0.9, seed=0, size=96, twins=2)
    return out


def _write_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path)


def _pseudo_masks(ds, prev_dir: Path, seed: int = 0) -> None:
    """Stand-in pseudo-masks of round t - 1: each image's first class on a random box."""
    rng = np.random.default_rng(seed)
    labels = ds.label_matrix()
    for i, name in enumerate(ds.names):
        h, w = ds.load_image(i).shape[:2]
        mask = np.zeros((h, w), np.uint8)
        cls = int(np.flatnonzero(labels[i])[0]) + 1
        bh, bw = rng.integers(h // 4, h // 2 + 1), rng.integers(w // 4, w // 2 + 1)
        y, x = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
        mask[y:y + bh, x:x + bw] = cls
        _write_png(prev_dir / "pseudo" / f"{name}.png", mask)


def test_a_pasted_image_is_the_object_under_its_mask_and_the_host_elsewhere():
    host = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    sample = {"image": host, "labels": torch.tensor([1.0, 0.0, 0.0]), "name": "a", "index": 0,
              "mask": torch.zeros(20, 30, dtype=torch.int64)}
    obj = torch.randint(0, 256, (3, 6, 8), dtype=torch.uint8)
    keep = torch.zeros(6, 8, dtype=torch.bool)
    keep[1:5, 2:7] = True
    out = paste_object(sample, obj, keep, top=3, left=10, cls=3)
    window = out["image"][:, 3:9, 10:18]
    assert torch.equal(window[:, keep], obj[:, keep])  # the object's pixels under its mask
    assert torch.equal(window[:, ~keep], host[:, 3:9, 10:18][:, ~keep])  # the host's elsewhere
    outside = torch.ones(20, 30, dtype=torch.bool)
    outside[3:9, 10:18] = False
    assert torch.equal(out["image"][:, outside], host[:, outside])
    assert out["labels"].tolist() == [1.0, 0.0, 1.0]  # the union
    assert int((out["mask"] == 3).sum()) == int(keep.sum())
    assert torch.equal(sample["image"], host) and sample["labels"].tolist() == [1.0, 0.0, 0.0]


def test_cut_object_takes_the_dilated_mask_and_its_bounding_box():
    image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    mask = np.zeros((10, 12), np.uint8)
    mask[4:6, 5:7] = 2
    rgb, alpha = cut_object(image, mask, 2, dilate=1)
    assert alpha.shape == (4, 4) and alpha.all()  # 2x2 grown by one pixel on every side
    assert np.array_equal(rgb, image[3:7, 4:8])
    assert cut_object(image, mask, 5, dilate=1) is None


def test_paste_transform_pastes_an_absent_class_at_the_stated_share():
    rgb = np.full((8, 8, 3), 200, np.uint8)
    bank = CropBank.from_crops([(rgb, np.ones((8, 8), bool), c) for c in (1, 2, 3)])
    host = {"image": torch.zeros(3, 40, 40, dtype=torch.uint8), "labels": torch.tensor(
        [1.0, 0.0, 0.0]), "name": "h", "index": 5}
    never = PasteTransform(bank, share=0.0, scale=(0.3, 0.5), seed=0, num_classes=4)
    assert never(host) is host
    always = PasteTransform(bank, share=1.0, scale=(0.3, 0.5), seed=0, num_classes=4)
    seen = set()
    for epoch in range(12):
        always.set_epoch(epoch)
        out = always(host)
        assert out["labels"][0] == 1.0 and out["labels"].sum() == 2.0  # host's class + one new
        seen.add(int(torch.nonzero(out["labels"][1:])[0, 0]) + 2)
        side = int((out["image"][0] == 200).any(0).sum())
        assert 0.3 * 40 - 1 <= side <= 0.5 * 40 + 1  # the stated scale of the short side
        again = always(host)
        assert torch.equal(again["image"], out["image"])  # same seed, index, epoch: same paste
    assert seen == {2, 3}  # only classes the host lacks
    full = {**host, "labels": torch.ones(3)}
    assert always(full) is full  # nothing left to paste


def test_the_paste_bank_keeps_single_class_objects_covering_10_to_70_percent(synth, tmp_path):
    ds = build_dataset("synthetic", synth, "train")
    labels = ds.label_matrix()
    single = [i for i in range(len(ds)) if labels[i].sum() == 1]
    multi = [i for i in range(len(ds)) if labels[i].sum() > 1]
    assert len(single) >= 3 and multi
    coverage = {single[0]: 0.05, single[1]: 0.3, single[2]: 0.8}
    for i in range(len(ds)):
        h, w = ds.load_image(i).shape[:2]
        cls = int(np.flatnonzero(labels[i])[0]) + 1
        mask = np.zeros((h, w), np.uint8)
        rows = int(round(coverage.get(i, 0.3) * h))
        mask[:rows] = cls
        if i not in coverage and i not in multi:
            mask[:] = 0  # every other single-class image predicts nothing
        _write_png(tmp_path / "prev" / "pseudo" / f"{ds.names[i]}.png", mask)
    record = build_paste_bank(ds, tmp_path / "prev", tmp_path / "bank.npz", min_fg=0.1,
                              max_fg=0.7, dilate=0)
    bank = CropBank.load(tmp_path / "bank.npz")
    assert len(bank) == record["objects"] == 1  # 5%, 80%, empty and multi-class images left out
    rgb, alpha = bank.crop(0)
    image = ds.load_image(single[1])
    assert alpha.all() and np.array_equal(rgb, image[:rgb.shape[0]])
    assert bank.classes[0] == int(np.flatnonzero(labels[single[1]])[0]) + 1


def test_banks_are_built_from_pseudo_masks_only(synth, tmp_path):
    """Changing the ground-truth masks changes neither bank: they read the previous round's
    pseudo-masks, never the truth."""
    root = tmp_path / "data"
    shutil.copytree(synth, root)
    ds = build_dataset("synthetic", root, "train")
    _pseudo_masks(ds, tmp_path / "prev")

    def banks(tag: str) -> list[dict]:
        build_paste_bank(ds, tmp_path / "prev", tmp_path / f"p{tag}.npz", min_fg=0.05,
                         max_fg=0.9, dilate=2)
        build_negative_bank(ds, tmp_path / "prev", tmp_path / f"n{tag}.npz", crop=0.3,
                            per_image=2, seed=0)
        return [vars(CropBank.load(tmp_path / f"{k}{tag}.npz")) for k in "pn"]

    before = banks("a")
    for path in (root / "VOCdevkit" / "VOC2012" / "SegmentationClass").glob("*.png"):
        mask = np.array(Image.open(path))
        Image.fromarray(np.where(mask == 255, 255, (mask + 1) % 7).astype(np.uint8),
                        mode="L").save(path)
    after = banks("b")
    assert len(before[0]["classes"]) > 0 and len(before[1]["classes"]) > 0
    for a, b in zip(before, after):
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_context_negatives_contain_no_predicted_foreground(synth, tmp_path):
    ds = build_dataset("synthetic", synth, "train")
    _pseudo_masks(ds, tmp_path / "prev", seed=1)
    build_negative_bank(ds, tmp_path / "prev", tmp_path / "n.npz", crop=0.3, per_image=3, seed=0)
    bank = CropBank.load(tmp_path / "n.npz")
    assert len(bank) > 0 and (bank.classes == 0).all()
    # every crop is a window of its source image whose pseudo-mask is all background
    crops = {bank.crop(k)[0].tobytes() for k in range(len(bank))}
    found = set()
    for i, name in enumerate(ds.names):
        image = ds.load_image(i)
        mask = np.array(Image.open(tmp_path / "prev" / "pseudo" / f"{name}.png"))
        side = max(1, round(0.3 * min(mask.shape)))
        windows = {image[y:y + side, x:x + side].tobytes()
                   for y, x in background_windows(mask, side)}
        found |= crops & windows
    assert found == crops


def test_the_negatives_audit_finds_no_object_under_perfect_pseudo_masks(synth, tmp_path):
    """The audit (which reads the ground truth) on the ground truth as pseudo-masks: no crop
    holds an object; on all-background pseudo-masks it finds the objects; it counts what the
    bank holds, per context."""
    ds = build_dataset("synthetic", synth, "train")
    for i, name in enumerate(ds.names):
        gt = ds.load_mask(i)
        _write_png(tmp_path / "gt" / "pseudo" / f"{name}.png", gt)
        _write_png(tmp_path / "empty" / "pseudo" / f"{name}.png", np.zeros_like(gt))
    perfect = audit_negative_bank(ds, tmp_path / "gt", crop=0.3, per_image=2, seed=0)
    assert set(perfect) == set(ds.context_names)
    assert sum(r["images"] for r in perfect.values()) == len(ds)
    crops = sum(r["crops"] for r in perfect.values())
    rec = build_negative_bank(ds, tmp_path / "gt", tmp_path / "n.npz", crop=0.3, per_image=2,
                              seed=0)
    assert crops == rec["crops"] > 0
    assert sum(r["images_with_crops"] for r in perfect.values()) == rec["images_with_crops"]
    assert all(r["crops_with_object"] == 0 and not r["by_class"] for r in perfect.values())
    # the margin keeps crops off the predicted objects' surroundings: fewer crops
    margin = audit_negative_bank(ds, tmp_path / "gt", crop=0.3, per_image=2, seed=0,
                                 margin=0.1)
    assert sum(r["crops"] for r in margin.values()) < crops
    blind = audit_negative_bank(ds, tmp_path / "empty", crop=0.3, per_image=2, seed=0)
    assert sum(r["crops_with_object"] for r in blind.values()) > 0
    assert all(0 < (r["object_pixels"] or 1) <= 1 for r in blind.values())


def test_background_windows_equal_a_brute_force_search():
    rng = np.random.default_rng(0)
    mask = (rng.random((9, 11)) < 0.08).astype(np.uint8) * 3
    mask[0, 0] = 255  # unsure counts as not background
    got = {tuple(c) for c in background_windows(mask, 3)}
    want = {(y, x) for y in range(7) for x in range(9) if not mask[y:y + 3, x:x + 3].any()}
    assert got == want
    assert background_windows(mask, 20).shape == (0, 2)
    # with a margin: no pixel of the window within 2 pixels (Chebyshev) of a non-zero pixel
    bad = np.argwhere(mask != 0)
    far = {(y, x) for y in range(7) for x in range(9)
           if all(max(abs(py - yy), abs(px - xx)) > 2 for py, px in bad
                  for yy in range(y, y + 3) for xx in range(x, x + 3))}
    assert {tuple(c) for c in background_windows(mask, 3, margin=2)} == far
    assert far < got


def test_negatives_view_adds_unlabelled_context_samples(synth):
    ds = build_dataset("synthetic", synth, "train")
    rgb = np.full((10, 12, 3), 7, np.uint8)
    bank = CropBank.from_crops([(rgb, np.ones((10, 12), bool), 0)])
    extra = extra_samples(len(ds), 0.2)
    view = NegativesView(ds, bank, extra)
    assert extra == round(0.25 * len(ds)) and len(view) == len(ds) + extra
    neg = view[len(ds) + 1]
    assert neg["labels"].sum() == 0 and neg["index"] == len(ds) + 1
    assert set(neg) == set(ds[0])  # collates with the images
    assert (neg["image"] == 7).all() and (neg["mask"] == 0).all()
    assert view[3]["name"] == ds.names[3]
    assert len(NegativesView(ds, CropBank.from_crops([]), extra)) == len(ds)


def test_the_extra_steps_control_adds_as_many_samples_as_negatives_and_only_repeats(synth):
    from causal_wsss.interventions.extra_steps import RepeatsView, repeat_picks

    ds = build_dataset("synthetic", synth, "train")
    extra = extra_samples(len(ds), 0.2)
    picks = repeat_picks(len(ds), extra, seed=3)
    assert picks.shape == (extra,) and picks.min() >= 0 and picks.max() < len(ds)
    np.testing.assert_array_equal(picks, repeat_picks(len(ds), extra, seed=3))  # seeded
    view = RepeatsView(ds, picks)
    assert len(view) == len(NegativesView(ds, CropBank.from_crops(
        [(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool), 0)]), extra))
    j = 2
    rep, src = view[len(ds) + j], ds[int(picks[j])]
    assert rep["index"] == len(ds) + j and rep["name"] != src["name"]  # augmented anew
    assert torch.equal(rep["image"], src["image"]) and torch.equal(rep["labels"], src["labels"])
    assert view[5]["name"] == ds.names[5]


def test_an_unknown_intervention_is_one_line_naming_the_known_ones(synth, tmp_path):
    with pytest.raises(ConfigError, match="context.intervention.*conta, paste"):
        get_intervention("nope")
    out = subprocess.run(
        [sys.executable, "-m", "causal_wsss", "run", "--root", str(synth), "--dataset",
         "synthetic", "--preset", "smoke", "--rounds", "1", "--out", str(tmp_path / "r"),
         "--no-progress", "context.intervention=nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "context.intervention" in out.stderr and "oracle_context_negatives" in out.stderr
    assert not (tmp_path / "r").exists()


def test_oracles_are_named_and_flagged():
    for name, iv in INTERVENTIONS.items():
        assert iv.oracle == name.startswith("oracle_")
    assert get_intervention("oracle_context_negatives").oracle


@pytest.fixture(scope="module")
def round0(synth, tmp_path_factory):
    """One baseline round 0 (smoke preset) that every intervention's round 1 shares, as the
    evidence protocol does (:func:`causal_wsss.evidence.share_round0`)."""
    out = tmp_path_factory.mktemp("round0") / "run"
    run_experiment(resolve("smoke", [f"data.root={synth}"], seed=0, rounds=0), out,
                   progress=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["paste", "context_negatives", "oracle_context_negatives",
                                  "conta_appearance", "oracle_conta_appearance",
                                  "control_extra_steps"])
def test_each_intervention_runs_a_round_and_resumes(synth, round0, tmp_path, name):
    from causal_wsss.evidence import share_round0

    cfg = resolve("smoke", [f"data.root={synth}", f"context.intervention={name}",
                            "paste.min_fg=0.0", "paste.max_fg=1.0"], seed=0, rounds=1)
    out = tmp_path / "run"
    assert share_round0(round0, out, cfg)  # round 0 reads no intervention key
    report = run_experiment(cfg, out, progress=False)
    assert report["intervention"] == name and report["oracle"] == name.startswith("oracle_")
    assert [e["round"] for e in report["rounds"]] == [0, 1]
    baseline = json.loads((round0 / "report.json").read_text())["rounds"][0]
    assert report["rounds"][0]["pseudo_miou"] == baseline["pseudo_miou"]  # the shared round 0
    stage = {"paste": "paste_bank", "context_negatives": "negative_bank",
             "oracle_context_negatives": "oracle_negative_bank",
             "conta_appearance": "appearance_dict",
             "oracle_conta_appearance": "oracle_appearance_dict"}.get(name)
    assert stage is None or (out / "round_1" / f"{stage}.json").is_file()
    assert not (out / "round_1" / "confounders.json").exists()
    records = {p.name: p.stat().st_mtime_ns for p in out.rglob("*.json")
               if p.name not in ("report.json", "config.json")}
    again = run_experiment(cfg, out, progress=False)  # resumes: nothing is redone
    assert again["rounds"] == report["rounds"]
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*.json")
            if p.name not in ("report.json", "config.json")} == records
    assert json.loads((out / "report.json").read_text())["intervention"] == name


def test_an_empty_bank_saves_and_loads(tmp_path):
    CropBank.from_crops([]).save(tmp_path / "b.npz")
    assert len(CropBank.load(tmp_path / "b.npz")) == 0


def test_appearance_prototypes_cluster_the_context_and_choose_k_without_truth():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 4
    x = np.concatenate([c + rng.normal(scale=0.1, size=(30, 16)) for c in centres])
    x = np.abs(x)  # post-ReLU features
    x[5] = np.nan  # an image without predicted background is left out
    fit = cluster_contexts(x, seed=0)
    assert fit["k"] == 3 and fit["prototypes"].shape == (3, 16)
    assert sorted(np.round(fit["prior"] * 89).astype(int).tolist()) == [29, 30, 30]


def test_the_appearance_dictionary_reads_pseudo_masks_not_the_truth(synth, tmp_path):
    """Pooled context vectors come from the previous round's pseudo-masks: rewriting the ground
    truth changes nothing, rewriting the pseudo-masks does."""
    from causal_wsss.stages.models import build_cam_model

    root = tmp_path / "data"
    shutil.copytree(synth, root)
    ds = build_dataset("synthetic", root, "train")
    _pseudo_masks(ds, tmp_path / "prev")
    cfg = resolve("smoke", [f"data.root={root}"])
    torch.manual_seed(0)
    net = build_cam_model(cfg, ds.num_classes - 1)
    dev = torch.device("cpu")
    q1, c1 = pooled_features(net, ds, tmp_path / "prev", device=dev)
    for path in (root / "VOCdevkit" / "VOC2012" / "SegmentationClass").glob("*.png"):
        Image.fromarray(np.zeros_like(np.array(Image.open(path)))).save(path)
    q2, c2 = pooled_features(net, ds, tmp_path / "prev", device=dev)
    assert np.array_equal(q1, q2) and np.array_equal(c1, c2, equal_nan=True)
    _pseudo_masks(ds, tmp_path / "prev", seed=5)
    _, c3 = pooled_features(net, ds, tmp_path / "prev", device=dev)
    assert not np.allclose(c1, c3, equal_nan=True)


def test_the_audit_script_reads_an_evidence_folder(synth, tmp_path, capsys):
    """scripts/negatives_audit.py on a negatives run whose round 0 pseudo-masks are the ground
    truth: every training image counted once, no crop with an object; a bad folder is one
    line."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "negatives_audit", Path(__file__).resolve().parents[1] / "scripts" / "negatives_audit.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ds = build_dataset("synthetic", synth, "train")
    run = tmp_path / "ev" / "negatives" / "rho0.9_seed0"
    for i, name in enumerate(ds.names):
        _write_png(run / "round_0" / "pseudo" / f"{name}.png", ds.load_mask(i))
    (run / "config.json").write_text(json.dumps({
        "seed": 0, "data": {"root": str(synth), "train_split": "train"},
        "negatives": {"crop": 0.3, "per_image": 2, "share": 0.2}}))
    assert script.main(["--out", str(tmp_path / "ev"), "--json", str(tmp_path / "a.json")]) == 0
    got = json.loads((tmp_path / "a.json").read_text())["0.9"]
    assert sum(r["images"] for r in got["contexts"].values()) == len(ds)
    assert sum(r["crops"] for r in got["contexts"].values()) > 0
    assert all(r["crops_with_object"] == 0 for r in got["contexts"].values())
    assert "| context | preferred by |" in capsys.readouterr().out
    assert script.main(["--out", str(tmp_path / "none")]) == 2
    assert "holds no negatives runs" in capsys.readouterr().err


def test_a_folder_of_background_photographs_is_the_bank(tmp_path):
    """negatives.folder: every image of the folder, sorted, as it is (long side capped at 512);
    a missing or empty folder, or an unreadable file, is one error naming it, and the run
    refuses a bad folder before any work."""
    rng = np.random.default_rng(0)
    photos = tmp_path / "backgrounds"
    photos.mkdir()
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(small).save(photos / "a.png")
    Image.fromarray(rng.integers(0, 256, (600, 1024, 3), dtype=np.uint8)).save(photos / "b.jpg")
    (photos / "notes.txt").write_text("not an image")
    rec = build_folder_bank(photos, tmp_path / "bank.npz")
    bank = CropBank.load(tmp_path / "bank.npz")
    assert rec["crops"] == len(bank) == 2 and (bank.classes == 0).all()
    assert np.array_equal(bank.crop(0)[0], small) and bank.crop(0)[1].all()
    assert tuple(bank.crop(1)[0].shape) == (300, 512, 3)
    with pytest.raises(ConfigError, match="is not a folder"):
        build_folder_bank(tmp_path / "nope", tmp_path / "x.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no image"):
        build_folder_bank(tmp_path / "empty", tmp_path / "x.npz")
    (photos / "c.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="c.png"):
        build_folder_bank(photos, tmp_path / "x.npz")
    cfg = resolve("smoke", ["data.root=/nowhere", "context.intervention=context_negatives",
                            f"negatives.folder={tmp_path / 'nope'}"], seed=0, rounds=1)
    with pytest.raises(ConfigError, match="negatives.folder"):
        run_experiment(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_negatives_from_a_folder_run_a_round(synth, round0, tmp_path):
    """context_negatives with negatives.folder (the user's background photographs; here the
    synthetic set's context-only twins, copied): round 1 trains on them, its bank record says
    where they came from."""
    from causal_wsss.evidence import share_round0

    photos = tmp_path / "backgrounds"
    photos.mkdir()
    twins = sorted((Path(synth) / "VOCdevkit").rglob("ctx_*.png"))
    assert twins
    for f in twins:
        shutil.copy(f, photos / f.name)
    cfg = resolve("smoke", [f"data.root={synth}", "context.intervention=context_negatives",
                            f"negatives.folder={photos}"], seed=0, rounds=1)
    out = tmp_path / "run"
    assert share_round0(round0, out, cfg)
    report = run_experiment(cfg, out, progress=False)
    assert [e["round"] for e in report["rounds"]] == [0, 1]
    record = json.loads((out / "round_1" / "negative_bank.json").read_text())
    assert record["crops"] == len(twins) and record["source"] == f"folder {photos}"
