"""The figures that must be able to move: contrast, precision split, uniform-map leakage, the
used-classes mIoU rule, and the do(context) score figures, each against a hand-computed case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from causal_wsss.context_effects import context_effects
from causal_wsss.metrics import (
    ConfusionMatrix,
    ContrastMeter,
    LeakageMeter,
    cams_to_labels,
    miou,
    precision_split,
)
from causal_wsss.runtime import CPU_AMP_ENV, amp_dtype, cpu_has_bf16

# One 4x4 image, classes: 0 background, 1 horse, 2 person. Horse top-left 2x2, person
# bottom-right 2x2, 8 context pixels; one ignored pixel on the context.
TARGET = torch.tensor([[1, 1, 0, 0],
                       [1, 1, 0, 0],
                       [0, 0, 2, 2],
                       [255, 0, 2, 2]])
LABELS = torch.tensor([1.0, 1.0])


def _meter(cams: torch.Tensor) -> dict:
    meter = ContrastMeter(3)
    meter.update(cams[None], TARGET[None], LABELS[None])
    return meter.compute(class_names=["background", "horse", "person"])


def test_contrast_of_uniform_perfect_and_context_only_maps() -> None:
    uniform = torch.ones(2, 4, 4)
    out = _meter(uniform)
    assert out["contrast_context"] == pytest.approx(1.0)
    assert out["contrast_partner"] == pytest.approx(1.0)
    # a uniform map leaks 1 - object share of the scored pixels: 1 - 4/15 for each class
    assert out["leakage_uniform"] == pytest.approx(1 - 4 / 15)
    leak = LeakageMeter(3)
    leak.update(uniform[None], TARGET[None], LABELS[None])
    assert leak.compute()["leakage"] == pytest.approx(out["leakage_uniform"])

    perfect = torch.stack([(TARGET == 1).float(), (TARGET == 2).float()])
    out = _meter(perfect)
    assert out["contrast_context"] == pytest.approx(1.001 / 0.001)
    assert out["contrast_partner"] == pytest.approx(1.001 / 0.001)

    context_only = torch.stack([(TARGET == 0).float(), (TARGET == 0).float()])
    out = _meter(context_only)
    assert out["contrast_context"] == pytest.approx(0.001 / 1.001)
    assert out["contrast_partner"] == pytest.approx(1.0)  # 0 on both objects

    half = perfect * 1.0 + 0.25 * (TARGET == 0).float()  # object 1, context 0.25
    assert _meter(half)["contrast_context"] == pytest.approx(1.001 / 0.251)


def test_contrast_meters_merge_like_one() -> None:
    torch.manual_seed(0)
    cams = torch.rand(2, 2, 4, 4)
    target = torch.stack([TARGET, TARGET.flip(1)])
    labels = torch.ones(2, 2)
    one = ContrastMeter(3)
    one.update(cams, target, labels)
    a, b = ContrastMeter(3), ContrastMeter(3)
    a.update(cams[:1], target[:1], labels[:1])
    b.update(cams[1:], target[1:], labels[1:])
    assert torch.allclose(a.merge(b).state, one.state)


def _conf(pred: torch.Tensor, classes=None) -> torch.Tensor:
    conf = ConfusionMatrix(4, classes=classes)
    conf.update(pred[None], TARGET[None])
    return conf


def test_precision_split_on_perfect_and_leaking_predictions() -> None:
    perfect = _conf(TARGET.clamp(max=2))
    out = precision_split(perfect.state, [0, 1, 2])
    assert out["precision"] == 1.0 and out["fp_context"] == 0.0 and out["fp_objects"] == 0.0
    # horse predicted on its object, 4 context pixels and the person: 4 / 12 right
    pred = torch.tensor([[1, 1, 1, 1],
                         [1, 1, 1, 1],
                         [0, 0, 1, 1],
                         [0, 0, 1, 1]])
    out = precision_split(_conf(pred).state, [0, 1, 2], ["bg", "horse", "person", "x"])
    horse = out["per_class"]["horse"]
    assert horse["precision"] == pytest.approx(4 / 12)
    assert horse["fp_context"] == pytest.approx(4 / 12)
    assert horse["fp_objects"] == pytest.approx(4 / 12)
    assert math.isnan(out["per_class"]["person"]["precision"])  # never predicted
    assert out["precision"] == pytest.approx(4 / 12)  # mean over the predicted classes


def test_miou_runs_over_the_data_sets_classes_only() -> None:
    # the person predicted as class 3, a class this data set does not use
    pred = TARGET.clamp(max=2).clone()
    pred[TARGET == 2] = 3
    conf = _conf(pred, classes=(0, 1, 2))
    # background 10/10... minus the ignored pixel: 10 scored context pixels, all right
    iou_bg, iou_horse, iou_person = 1.0, 1.0, 0.0
    assert conf.miou() == pytest.approx((iou_bg + iou_horse + iou_person) / 3)
    # over all four labels, class 3 would add an extra zero (IoU 0 / 4) to the mean
    assert miou(conf.state) == pytest.approx(2 / 4)
    # a perfect prediction scores 1 whatever the unused classes
    assert _conf(TARGET.clamp(max=2), classes=(0, 1, 2)).miou() == pytest.approx(1.0)


def test_thresholded_uniform_cam_predicts_everything() -> None:
    labels = cams_to_labels(torch.full((2, 4, 4), 0.5), threshold=0.15)
    assert (labels == 1).all()


META = {
    "preferred_context": {"horse": "grass", "person": "indoor"},
    "contexts": ["grass", "indoor", "road"],
    "classes": ["horse", "person"],
    "pairs": [["horse", "person"]],
}


def _twin_meta() -> tuple[list[str], dict]:
    images = []
    for g, ctxs in ((1, ["grass", "indoor", "road"]), (2, ["grass", "indoor", "road"])):
        objects = [{"class": "horse"}] if g == 1 else [{"class": "horse"}, {"class": "person"}]
        for c in ctxs:
            images.append({"name": f"twin_{g}_{c}", "kind": "twin", "twin_of": f"val_{g}",
                           "context": c, "objects": objects, "anchor": "horse"})
    images.append({"name": "twin_2_nopartner", "kind": "no_partner", "twin_of": "val_2",
                   "context": "grass", "objects": [{"class": "horse"}], "anchor": "horse"})
    for c in ("grass", "indoor", "road"):
        images.append({"name": f"ctx_1_{c}", "kind": "context_only", "twin_of": "val_1",
                       "context": c, "objects": [], "anchor": ""})
    return [img["name"] for img in images], {**META, "images": images}


def test_context_effects_against_hand_computed_logits() -> None:
    names, meta = _twin_meta()
    row = {n: i for i, n in enumerate(names)}
    logits = np.zeros((len(names), 2), dtype=np.float32)  # columns: horse, person
    # group 1: horse logit 3 on grass (preferred), 1 and 2 elsewhere -> effect 3 - 1.5 = 1.5
    logits[row["twin_1_grass"], 0], logits[row["twin_1_indoor"], 0] = 3, 1
    logits[row["twin_1_road"], 0] = 2
    # group 2: horse 4 on grass, 2 elsewhere -> 2; without its rider on grass: 1 -> partner 3
    logits[row["twin_2_grass"], 0] = 4
    logits[row["twin_2_indoor"], 0] = logits[row["twin_2_road"], 0] = 2
    logits[row["twin_2_nopartner"], 0] = 1
    # person (group 2 only): 5 indoors (preferred), 1 elsewhere -> 4
    logits[row["twin_2_indoor"], 1] = 5
    logits[row["twin_2_grass"], 1] = logits[row["twin_2_road"], 1] = 1
    # context alone: grass says horse (p > 0.5), the rest says nothing
    logits[row["ctx_1_grass"], 0] = 2
    logits[[row["ctx_1_indoor"], row["ctx_1_road"]], 0] = -3
    logits[[row[f"ctx_1_{c}"] for c in ("grass", "indoor", "road")], 1] = -3

    out = context_effects(logits, names, meta, ["background", "horse", "person"])
    horse, person = out["per_class"]["horse"], out["per_class"]["person"]
    assert horse["context_effect"] == pytest.approx(1.75)
    assert horse["context_effect_sd"] == pytest.approx(np.std([1.5, 2.0], ddof=1))
    assert person["context_effect"] == pytest.approx(4.0) and person["groups"] == 1
    assert out["context_effect"] == pytest.approx((1.75 + 4.0) / 2)
    assert horse["fp_rate_preferred"] == 1.0 and horse["fp_rate_other"] == 0.0
    assert person["fp_rate_preferred"] == 0.0
    assert out["partner"]["horse"]["partner_effect"] == pytest.approx(3.0)
    # an object-only network: the same logit everywhere -> no effect, no false positives
    flat = np.repeat(np.where(np.arange(len(names)) < 7, 2.0, -5.0)[:, None], 2, 1).astype(np.float32)
    flat_out = context_effects(flat, names, meta, ["background", "horse", "person"])
    assert flat_out["context_effect"] == pytest.approx(0.0)
    assert flat_out["fp_rate_preferred"] == 0.0


def test_amp_on_the_cpu_only_when_asked(monkeypatch, caplog) -> None:
    """fp32 on every CPU by default, bf16 units or not (measured: docs/benchmarks.md); bf16
    with CAUSAL_WSSS_CPU_AMP=1 (a warning where the CPU emulates it); a bad value is refused
    naming the variable; cpu_has_bf16 only reads the flags."""
    import os

    from causal_wsss.errors import ConfigError
    from causal_wsss.runtime import _warn_emulated_bf16, cpu_amp_enabled

    cpu = torch.device("cpu")
    monkeypatch.delenv(CPU_AMP_ENV, raising=False)
    assert not cpu_amp_enabled() and amp_dtype(cpu) is None
    monkeypatch.setenv(CPU_AMP_ENV, "0")
    assert amp_dtype(cpu) is None
    _warn_emulated_bf16.cache_clear()
    monkeypatch.setenv(CPU_AMP_ENV, "1")
    with caplog.at_level("WARNING", logger="causal_wsss"):
        assert cpu_amp_enabled() and amp_dtype(cpu) == torch.bfloat16
    emulated = [r for r in caplog.records if "emulates bf16" in r.getMessage()]
    assert len(emulated) == (0 if cpu_has_bf16() else 1)  # once, however often it is asked
    monkeypatch.setenv(CPU_AMP_ENV, "maybe")
    with pytest.raises(ConfigError, match=CPU_AMP_ENV):
        amp_dtype(cpu)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    assert cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
