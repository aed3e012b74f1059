"""do(context): the twins split and the interventional training distribution of the generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from causal_wsss.constants import IGNORE_INDEX
from causal_wsss.data import build_dataset
from causal_wsss.data.scenes import SPEC, draw_scene, independent_pair_prob, twin_scenes
from causal_wsss.data.synthetic import TWIN_SPLIT, generate_synthetic, load_meta
from causal_wsss.errors import ConfigError


def test_twins_share_every_object_pixel_and_differ_only_in_the_context() -> None:
    groups: dict[str, list] = {}
    for name, twin_of, scene, kind in twin_scenes(3, 6, 0.9, 120, None):
        groups.setdefault(twin_of, []).append((name, scene, kind))
    assert len(groups) == 6
    for members in groups.values():
        twins = [(n, s) for n, s, k in members if k == "twin"]
        assert sorted(s.context for _, s in twins) == sorted(SPEC.contexts)
        ref = twins[0][1]
        inside = (ref.label != 0) & (ref.label != IGNORE_INDEX)  # object pixels (no edge band)
        assert inside.any()
        for name, scene in twins[1:]:
            assert np.array_equal(scene.label, ref.label), name
            assert np.array_equal(scene.instances, ref.instances), name
            assert [(o.cls, o.bbox) for o in scene.objects] == [(o.cls, o.bbox) for o in ref.objects]
            assert np.array_equal(scene.image[inside], ref.image[inside]), name
            outside = scene.label == 0
            assert (scene.image[outside] != ref.image[outside]).any(), name  # another context
        own = [s for _, s in twins if s.preferred == (s.context == SPEC.preferred_context(s.anchor))]
        assert len(own) == len(twins)
        for _name, scene, kind in members:
            if kind == "no_partner":
                assert not scene.pair and ref.pair
                partner = {o.cls for o in ref.objects if o.role == "partner"}
                assert partner and partner.isdisjoint(o.cls for o in scene.objects if o.role == "partner")
            if kind == "context_only":
                assert not scene.objects and not scene.label.any()
        contexts_alone = sorted(s.context for _, s, k in members if k == "context_only")
        assert contexts_alone == sorted(SPEC.contexts)


def test_twins_split_is_written_in_the_voc_layout_and_read_back(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path, n_train=4, n_val=5, rho=0.9, seed=1, size=96, twins=2)
    twins = build_dataset("voc", tmp_path, TWIN_SPLIT)
    meta = load_meta(tmp_path)
    entries = {img["name"]: img for img in meta["images"] if img["split"] == TWIN_SPLIT}
    assert set(twins.names) == set(entries)
    assert {e["twin_of"] for e in entries.values()} == {"val_000001", "val_000002"}
    assert {e["kind"] for e in entries.values()} >= {"twin", "context_only"}
    # the twin on the image's own context is the validation image, byte for byte
    val = build_dataset("voc", tmp_path, "val")
    for i in range(2):
        own = next(n for n, e in entries.items() if e["twin_of"] == val.names[i]
                   and e["kind"] == "twin" and e["context"] == meta["images"][4 + i]["context"])
        assert (root / "JPEGImages" / f"{own}.jpg").read_bytes() == \
            (root / "JPEGImages" / f"{val.names[i]}.jpg").read_bytes()
    # the labels and masks follow the sidecar: context-only images have no class and no object
    for i, name in enumerate(twins.names):
        labels = twins.image_labels(i)
        classes = {twins.classes[k + 1] for k in np.flatnonzero(labels)}
        assert classes == {o["class"] for o in entries[name]["objects"]}
        if entries[name]["kind"] == "context_only":
            assert not twins.load_mask(i).any()
    # same arguments, same bytes
    again = tmp_path / "again"
    generate_synthetic(again, n_train=4, n_val=5, rho=0.9, seed=1, size=96, twins=2)
    for name in twins.names:
        rel = Path("VOCdevkit/VOC2012/JPEGImages") / f"{name}.jpg"
        assert (tmp_path / rel).read_bytes() == (again / rel).read_bytes()
    with pytest.raises(ConfigError, match="twins"):
        generate_synthetic(tmp_path / "bad", n_train=4, n_val=2, rho=0.9, seed=1, size=96, twins=3)


def _sample(n: int, rho: float, pair_prob) -> list[tuple[str, str, set[str]]]:
    rows = []
    for i in range(n):
        scene = draw_scene(np.random.default_rng([11, i]), rho, 64,
                            bg_rng=np.random.default_rng([11, i, 1]), pair_prob=pair_prob)
        rows.append((scene.anchor, scene.context, {o.cls for o in scene.objects}))
    return rows


def _lift_z(rows, anchor: str, partner: str) -> float:
    """z statistic of P(partner | anchor present) - P(partner | anchor absent)."""
    with_a = np.array([partner in r[2] for r in rows if anchor in r[2]])
    without = np.array([partner in r[2] for r in rows if anchor not in r[2]])
    p1, p0 = with_a.mean(), without.mean()
    se = np.sqrt(p1 * (1 - p1) / with_a.size + p0 * (1 - p0) / without.size)
    return float((p1 - p0) / se)


def _context_z(rows, anchor: str) -> float:
    """z statistic of P(preferred context | anchor) against the uniform 1 / contexts."""
    ctx = np.array([r[1] == SPEC.preferred_context(anchor) for r in rows if r[0] == anchor])
    p = 1 / len(SPEC.contexts)
    return float((ctx.mean() - p) / np.sqrt(p * (1 - p) / ctx.size))


def test_interventional_distribution_has_no_class_context_or_partner_dependence() -> None:
    rows = _sample(3000, 1 / len(SPEC.contexts), independent_pair_prob())
    for anchor in SPEC.classes:
        assert abs(_context_z(rows, anchor)) < 4, anchor
    for anchor, partner in SPEC.pairs:
        assert abs(_lift_z(rows, anchor, partner)) < 4, (anchor, partner)
    # the same statistics flag the confounded benchmark (the test can fail)
    confounded = _sample(1000, 0.9, None)
    assert all(_context_z(confounded, a) > 10 for a in SPEC.classes)
    assert all(_lift_z(confounded, a, p) > 5 for a, p in SPEC.pairs)


def test_interventional_set_records_its_distribution(tmp_path: Path) -> None:
    generate_synthetic(tmp_path, n_train=6, n_val=2, rho=0.9, seed=0, size=96, interventional=True)
    meta = load_meta(tmp_path)
    assert meta["distribution"] == "interventional"
    assert meta["params"]["interventional"] is True
    assert meta["pair_prob"] == pytest.approx(independent_pair_prob())


def test_synth_command_writes_twins_that_stats_reads(tmp_path: Path, capsys) -> None:
    import json

    from causal_wsss.cli import main

    out = tmp_path / "s"
    assert main(["synth", str(out), "--train", "4", "--val", "3", "--size", "96", "--twins", "2",
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["stats", "--dataset", "voc", "--root", str(out), "--split", "twins",
                 "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    meta = load_meta(out)
    assert meta["params"]["twins"] == 2
    n = sum(1 for img in meta["images"] if img["split"] == TWIN_SPLIT)
    assert stats["num_images"] == n
    # --twins without a number: every validation image
    assert main(["synth", str(tmp_path / "all"), "--train", "2", "--val", "2", "--size", "96",
                 "--twins", "--no-progress"]) == 0
    assert load_meta(tmp_path / "all")["params"]["twins"] == 2


def test_twin_eval_scores_from_the_cam_pass_match_a_pass_of_their_own(tmp_path: Path) -> None:
    """With the speed-ups the twins' scores come from their CAMs' scale-1 pass (folded network);
    without, from a separate full-image pass: the same figures up to float round-off."""
    import torch

    from causal_wsss.config import resolve
    from causal_wsss.runtime import DistInfo, use_speedups
    from causal_wsss.stages.models import initial_cam_model
    from causal_wsss.stages.twins import stage_twin_eval

    generate_synthetic(tmp_path / "d", n_train=4, n_val=4, rho=0.9, seed=2, size=64, twins=2)
    cfg = resolve("smoke", [f"data.root={tmp_path / 'd'}"], rounds=0)
    twins = build_dataset("voc", tmp_path / "d", TWIN_SPLIT)
    net = initial_cam_model(cfg, twins.num_classes - 1)
    results = {}
    for fast in (False, True):
        with use_speedups(fast):
            results[fast] = stage_twin_eval(cfg, net, twins, tmp_path / f"c{fast}", 0.3,
                                            device=torch.device("cpu"), dist_info=DistInfo(),
                                            progress=False, context_fn=None)
    for key in ("context_effect", "fp_rate_preferred", "cam_miou_in_context",
                "cam_miou_out_of_context"):
        a, b = results[False][key], results[True][key]
        assert (a is None and b is None) or abs(a - b) < 1e-3, key
