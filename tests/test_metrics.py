"""Tests for causal_wsss.metrics: hand-computed IoU, the one-pass threshold sweep, CAM leakage."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from causal_wsss.errors import ConfigError, DataError
from causal_wsss.io import torch_save
from causal_wsss.metrics import (
    DEFAULT_THRESHOLDS,
    ConfusionMatrix,
    LeakageMeter,
    ThresholdSweep,
    cams_to_labels,
    iou_per_class,
    miou,
    scores_from_confusion,
    threshold_grid,
)

# A 4x4 example scored by hand (one ignored pixel at (2, 2), whose prediction must not count).
TARGET = torch.tensor([[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [2, 2, 255, 1],
                       [2, 2, 0, 0]])
PRED = torch.tensor([[0, 1, 1, 1],
                     [0, 0, 1, 0],
                     [2, 1, 2, 1],
                     [2, 2, 0, 2]])
# rows = target, columns = prediction, counted pixel by pixel
HAND_CONF = [[4, 1, 1],
             [1, 4, 0],
             [0, 1, 3]]
HAND_IOU = (4 / 7, 4 / 7, 3 / 5)  # TP / (row + column - TP)
HAND_MIOU = 61 / 105  # (4/7 + 4/7 + 3/5) / 3


def test_confusion_matrix_hand_example() -> None:
    matrix = ConfusionMatrix(3)
    matrix.update(PRED, TARGET)
    assert matrix.state.tolist() == HAND_CONF
    assert matrix.state.dtype == torch.int64
    scores = matrix.compute()
    assert scores.iou == pytest.approx(HAND_IOU)
    assert scores.miou == pytest.approx(HAND_MIOU)
    assert scores.miou_percent == pytest.approx(100 * HAND_MIOU)
    assert scores.pixel_accuracy == pytest.approx(11 / 15)
    assert scores.pixels == 15
    assert scores.precision == pytest.approx((4 / 5, 4 / 6, 3 / 4))
    assert scores.recall == pytest.approx((4 / 6, 4 / 5, 3 / 4))
    assert scores.mean_accuracy == pytest.approx((4 / 6 + 4 / 5 + 3 / 4) / 3)
    assert miou(matrix.state) == pytest.approx(HAND_MIOU)
    assert iou_per_class(matrix.state).tolist() == pytest.approx(list(HAND_IOU))


def test_absent_class_is_nan_and_predicted_absent_class_is_zero() -> None:
    matrix = ConfusionMatrix(5)
    matrix.update(PRED, TARGET)  # classes 3 and 4 are in neither map
    iou = iou_per_class(matrix.state)
    assert math.isnan(iou[3]) and math.isnan(iou[4])
    assert matrix.miou() == pytest.approx(HAND_MIOU)  # nanmean skips them
    scores = matrix.compute()
    assert math.isnan(scores.precision[3]) and math.isnan(scores.recall[3])
    payload = scores.as_dict(("bg", "a", "b", "c", "d"))
    assert payload["per_class"]["c"]["iou"] is None
    json.dumps(payload, allow_nan=False)  # NaN became None

    pred = PRED.clone()
    pred[3, 3] = 3  # a background pixel predicted as 2 is now predicted as 3, absent from target
    matrix = ConfusionMatrix(5)
    matrix.update(pred, TARGET)
    iou = iou_per_class(matrix.state)
    assert iou[3] == 0.0 and math.isnan(iou[4])
    assert iou[0] == pytest.approx(4 / 7)  # row 6, column 5, TP 4: the union is unchanged
    assert iou[2] == pytest.approx(3 / 4)  # one false positive less: 3 / (4 + 3 - 3)
    assert matrix.miou() == pytest.approx((4 / 7 + 4 / 7 + 3 / 4 + 0) / 4)  # 53/112


def test_batches_dtypes_accumulation_reset_and_merge() -> None:
    batched = ConfusionMatrix(3)
    batched.update(torch.stack([PRED, PRED]).to(torch.uint8), torch.stack([TARGET, TARGET]).to(torch.uint8))
    assert batched.state.tolist() == [[2 * v for v in row] for row in HAND_CONF]

    twice = ConfusionMatrix(3)
    twice.update(PRED, TARGET)
    twice.update(PRED.to(torch.int32), TARGET)
    assert torch.equal(twice.state, batched.state)

    one, other = ConfusionMatrix(3), ConfusionMatrix(3)
    one.update(PRED, TARGET)
    other.update(PRED, TARGET)
    one += other
    assert torch.equal(one.state, batched.state)
    assert torch.equal(ConfusionMatrix.from_state(one.state).state, batched.state)
    one.all_reduce()  # no process group: a no-op
    assert torch.equal(one.state, batched.state)
    one.reset()
    assert int(one.state.sum()) == 0
    assert math.isnan(one.miou())
    with pytest.raises(ConfigError):
        one.merge(ConfusionMatrix(4))


def test_confusion_matrix_rejects_bad_input() -> None:
    matrix = ConfusionMatrix(3)
    bad = PRED.clone()
    bad[0, 0] = 3
    with pytest.raises(ValueError, match=r"pred holds labels in \[0, 3\].*\[0, 2\]"):
        matrix.update(bad, TARGET)
    with pytest.raises(DataError, match="target"):
        matrix.update(PRED, torch.where(TARGET == 2, 7, TARGET))
    with pytest.raises(DataError, match="same shape"):
        matrix.update(PRED, TARGET[:3])
    with pytest.raises(DataError, match="integer"):
        matrix.update(PRED.float(), TARGET)
    assert int(matrix.state.sum()) == 0  # nothing was counted by a rejected batch
    ok = PRED.clone()
    ok[2, 2] = 99  # an out-of-range prediction on an ignored pixel is not scored
    matrix.update(ok, TARGET)
    assert matrix.state.tolist() == HAND_CONF
    with pytest.raises(ConfigError):
        ConfusionMatrix(1)
    with pytest.raises(ConfigError):
        ConfusionMatrix(300)  # 255 would be a class label


def test_threshold_grid() -> None:
    assert len(DEFAULT_THRESHOLDS) == 56
    assert DEFAULT_THRESHOLDS[0] == 0.05 and DEFAULT_THRESHOLDS[-1] == 0.6
    assert 0.15 in DEFAULT_THRESHOLDS
    assert threshold_grid(0.0, 0.59, 0.01)[-1] == 0.59 and len(threshold_grid(0.0, 0.59, 0.01)) == 60
    with pytest.raises(ConfigError):
        threshold_grid(0.5, 0.1, 0.01)


def test_cams_to_labels_tie_rule() -> None:
    # one row of 5 pixels, 2 foreground classes
    cams = torch.tensor([[[0.15, 0.20, 0.30, 0.10, 0.0]],
                         [[0.10, 0.20, 0.40, 0.15, 0.0]]])  # (K=2, H=1, W=5)
    pred = cams_to_labels(cams, 0.15)
    # 0.15 == t -> background; tie 0.20/0.20 -> first class; 0.40 -> class 2; 0.15 -> background
    assert pred.tolist() == [[0, 1, 2, 0, 0]]
    labels = torch.tensor([0.0, 1.0])  # class 1 absent: its CAM is ignored
    assert cams_to_labels(cams, 0.15, labels).tolist() == [[0, 2, 2, 0, 0]]
    assert cams_to_labels(cams.unsqueeze(0), 0.15).shape == (1, 1, 5)


def _irnet_prediction(cams: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """IRNet eval_cam: keep the label classes, pad the threshold in front, argmax, map back."""
    keys = np.pad(np.nonzero(labels)[0] + 1, (1, 0), mode="constant")
    padded = np.pad(cams[np.nonzero(labels)[0]], ((1, 0), (0, 0), (0, 0)), mode="constant",
                    constant_values=threshold)
    return keys[np.argmax(padded, axis=0)]


def _random_cam_batch(seed: int, batch: int = 3, num_fg: int = 4, size: int = 9):
    generator = torch.Generator().manual_seed(seed)
    # CAM values on a 0.01 grid so that many pixels tie exactly with a threshold
    cams = torch.randint(0, 71, (batch, num_fg, size, size), generator=generator).float() / 100
    labels = (torch.rand(batch, num_fg, generator=generator) < 0.6).float()
    target = torch.randint(0, num_fg + 1, (batch, size, size), generator=generator)
    target[torch.rand(batch, size, size, generator=generator) < 0.1] = 255
    return cams, labels, target


def test_cams_to_labels_matches_irnet_reference() -> None:
    cams, labels, _ = _random_cam_batch(seed=0)
    for threshold in (0.0, 0.15, 0.3, 0.55):
        pred = cams_to_labels(cams, threshold, labels)
        for b in range(cams.shape[0]):
            reference = _irnet_prediction(cams[b].numpy(), labels[b].numpy(), threshold)
            assert np.array_equal(pred[b].numpy(), reference)


def test_sweep_equals_brute_force_per_threshold() -> None:
    num_classes = 5
    sweep = ThresholdSweep(num_classes)
    brute = {t: ConfusionMatrix(num_classes) for t in sweep.thresholds}
    for seed in range(3):
        cams, labels, target = _random_cam_batch(seed, num_fg=num_classes - 1)
        sweep.update(cams, target, labels)
        for t, matrix in brute.items():
            matrix.update(cams_to_labels(cams, t, labels), target)
    matrices = sweep.confusion_matrices()
    assert matrices.shape == (56, num_classes, num_classes)
    for j, t in enumerate(sweep.thresholds):
        assert torch.equal(matrices[j], brute[t].state), f"threshold {t}"
    curve = sweep.compute()
    assert [t for t, _ in curve] == list(DEFAULT_THRESHOLDS)
    assert [m for _, m in curve] == pytest.approx([brute[t].miou() for t in sweep.thresholds])
    best_t, best_m = sweep.best()
    assert best_m == max(m for _, m in curve)
    assert best_t == min(t for t, m in curve if m == best_m)
    assert sweep.at(0.15) == brute[0.15].compute()
    with pytest.raises(ConfigError, match="not in the grid"):
        sweep.at(0.155)


def test_sweep_with_zeroed_cams_and_labels_agree_and_merge() -> None:
    cams, labels, target = _random_cam_batch(seed=5)
    with_labels, zeroed = ThresholdSweep(5, thresholds=(0.1, 0.2, 0.3)), ThresholdSweep(5, (0.1, 0.2, 0.3))
    with_labels.update(cams, target, labels)
    zeroed.update(cams * labels[:, :, None, None], target)
    assert torch.equal(with_labels.state, zeroed.state)
    single = ThresholdSweep(5, (0.1, 0.2, 0.3))
    single.update(cams[0], target[0], labels[0])  # unbatched input
    single.update(cams[1:], target[1:], labels[1:])
    assert torch.equal(single.state, with_labels.state)
    with_labels += zeroed
    assert torch.equal(with_labels.state, 2 * zeroed.state)
    # every scored pixel sits in exactly one cell of every threshold's matrix
    scored = int((target != 255).sum())
    assert (zeroed.confusion_matrices().sum(dim=(1, 2)) == scored).all()
    with pytest.raises(ConfigError):
        zeroed.merge(ThresholdSweep(5, (0.1, 0.2)))
    with pytest.raises(ConfigError):
        ThresholdSweep(5, (0.2, 0.1))
    with pytest.raises(DataError, match="foreground CAM channels"):
        zeroed.update(cams[:, :3], target)
    with pytest.raises(DataError, match="NaN"):
        zeroed.update(torch.full_like(cams, math.nan), target)
    with pytest.raises(DataError):
        ThresholdSweep(5).best()


# Leakage on a tiny image: background 0, class A = 1, class B = 2, one ignored pixel.
LEAK_TARGET = torch.tensor([[1, 1, 0, 0],
                            [1, 1, 0, 0],
                            [2, 2, 0, 255],
                            [2, 2, 0, 0]])
CAM_A = torch.tensor([[1.0, 1.0, 0.5, 0.0],
                      [1.0, 0.0, 0.0, 0.0],
                      [0.5, 0.5, 0.0, 2.0],  # the 2.0 lies on the ignored pixel
                      [0.0, 0.0, 0.0, 0.0]])
CAM_B = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 0.0],
                      [1.0, 1.0, 1.0, 0.0],
                      [1.0, 1.0, 0.0, 0.0]])
# A: mass 4.5, inside 3, on B 1.0, on background 0.5 -> leak 1/3 = 2/9 + 1/9
# B: mass 5, inside 4, on A 0, on background 1 -> leak 1/5 = 0 + 1/5
LEAK_A, COOC_A, BG_A = Fraction(1, 3), Fraction(2, 9), Fraction(1, 9)
LEAK_B, COOC_B, BG_B = Fraction(1, 5), Fraction(0), Fraction(1, 5)


def test_leakage_hand_example() -> None:
    cams = torch.stack([CAM_A, CAM_B])  # (K=2, 4, 4)
    meter = LeakageMeter(3)
    meter.update(cams, LEAK_TARGET, torch.tensor([1.0, 1.0]))
    result = meter.compute(class_names=("background", "A", "B"))
    assert result["pairs"] == 2 and result["skipped_pairs"] == 0
    assert result["leakage"] == pytest.approx(float((LEAK_A + LEAK_B) / 2))  # 4/15
    assert result["leakage_cooccur"] == pytest.approx(float((COOC_A + COOC_B) / 2))  # 1/9
    assert result["leakage_background"] == pytest.approx(float((BG_A + BG_B) / 2))  # 7/45
    assert result["leakage"] == pytest.approx(result["leakage_cooccur"] + result["leakage_background"])
    a, b = result["per_class"]["A"], result["per_class"]["B"]
    assert (a["leakage"], a["leakage_cooccur"], a["leakage_background"]) == pytest.approx(
        (float(LEAK_A), float(COOC_A), float(BG_A)))
    assert (b["leakage"], b["leakage_cooccur"], b["leakage_background"]) == pytest.approx(
        (float(LEAK_B), float(COOC_B), float(BG_B)))

    # a second image: B absent from the label (not counted), A scaled by 3 (same ratios),
    # and a third whose A CAM is zero on every scored pixel (skipped)
    batch = torch.stack([torch.stack([3 * CAM_A, CAM_B]),
                         torch.stack([torch.zeros(4, 4), CAM_B])])  # (B=2, K=2, 4, 4)
    meter.update(batch, torch.stack([LEAK_TARGET, LEAK_TARGET]), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    result = meter.compute()
    assert result["pairs"] == 4 and result["skipped_pairs"] == 1
    assert result["per_class"][1]["pairs"] == 2 and result["per_class"][2]["pairs"] == 2
    assert result["per_class"][1]["leakage"] == pytest.approx(float(LEAK_A))
    assert result["leakage"] == pytest.approx(float((2 * LEAK_A + 2 * LEAK_B) / 4))


def _leakage_reference(cams, target, labels):
    """A pixel-loop-free but per-(image, class) loop over boolean masks."""
    rows = []
    for b in range(cams.shape[0]):
        valid = target[b] != 255
        for k in range(cams.shape[1]):
            if labels[b, k] == 0:
                continue
            a = cams[b, k].double()
            mass = a[valid].sum()
            if mass == 0:
                continue
            bg = a[target[b] == 0].sum() / mass
            other = a[valid & (target[b] != 0) & (target[b] != k + 1)].sum() / mass
            rows.append((k, float(bg + other), float(other), float(bg)))
    return rows


def test_leakage_matches_per_pair_loop_and_merges() -> None:
    cams, labels, target = _random_cam_batch(seed=7, batch=4)
    reference = _leakage_reference(cams, target, labels)
    meter = LeakageMeter(5)
    meter.update(cams, target, labels)
    result = meter.compute()
    assert result["pairs"] == len(reference)
    for col, key in enumerate(("leakage", "leakage_cooccur", "leakage_background"), start=1):
        assert result[key] == pytest.approx(np.mean([r[col] for r in reference]))
        for k in range(4):
            values = [r[col] for r in reference if r[0] == k]
            if values:
                assert result["per_class"][k + 1][key] == pytest.approx(np.mean(values))
    halves = LeakageMeter(5)
    halves.update(cams[:2], target[:2], labels[:2])
    rest = LeakageMeter(5)
    rest.update(cams[2:], target[2:], labels[2:])
    halves.merge(rest)
    assert halves.compute()["leakage"] == pytest.approx(result["leakage"])
    with pytest.raises(DataError, match="non-negative"):
        meter.update(cams - 1, target, labels)
    with pytest.raises(DataError, match="0/1"):
        meter.update(cams, target, labels * 0.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu() -> None:
    cams, labels, target = _random_cam_batch(seed=11)
    results = {}
    for device in ("cpu", "cuda"):
        matrix = ConfusionMatrix(5, device=device)
        matrix.update(cams_to_labels(cams.to(device), 0.15, labels.to(device)), target.to(device))
        sweep = ThresholdSweep(5, device=device)
        sweep.update(cams.to(device), target.to(device), labels.to(device))
        meter = LeakageMeter(5, device=device)
        meter.update(cams.to(device), target.to(device), labels.to(device))
        assert matrix.state.device.type == sweep.state.device.type == device
        results[device] = (matrix.state.cpu(), sweep.state.cpu(), meter.compute()["leakage"])
    assert torch.equal(results["cpu"][0], results["cuda"][0])
    assert torch.equal(results["cpu"][1], results["cuda"][1])
    assert results["cpu"][2] == pytest.approx(results["cuda"][2])
    # state on the CPU, data on the GPU: counted on the GPU, added on the CPU
    matrix = ConfusionMatrix(3)
    matrix.update(PRED.cuda(), TARGET.cuda())
    assert matrix.state.tolist() == HAND_CONF


def _meters_for_rank(rank: int):
    cams, labels, target = _random_cam_batch(seed=100 + rank)
    matrix, sweep, meter = ConfusionMatrix(5), ThresholdSweep(5, (0.1, 0.3, 0.5)), LeakageMeter(5)
    matrix.update(cams_to_labels(cams, 0.3, labels), target)
    sweep.update(cams, target, labels)
    meter.update(cams, target, labels)
    return matrix, sweep, meter


def _all_reduce_worker(rank: int, world_size: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=world_size)
    try:
        matrix, sweep, meter = _meters_for_rank(rank)
        matrix.all_reduce()
        sweep.all_reduce()
        meter.all_reduce()
        torch_save(f"{folder}/rank{rank}.pt", {"matrix": matrix.state, "sweep": sweep.state,
                                               "leak": meter.state})
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_two_gloo_ranks(tmp_path) -> None:
    mp.spawn(_all_reduce_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    matrix, sweep, meter = _meters_for_rank(0)
    other_matrix, other_sweep, other_meter = _meters_for_rank(1)
    matrix += other_matrix
    sweep += other_sweep
    meter += other_meter
    for rank in range(2):
        saved = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(saved["matrix"], matrix.state)
        assert torch.equal(saved["sweep"], sweep.state)
        assert torch.allclose(saved["leak"][0], meter.state[0])
        assert torch.equal(saved["leak"][1], meter.state[1])


def test_scores_from_confusion_empty_and_shape_checks() -> None:
    scores = scores_from_confusion(torch.zeros(3, 3, dtype=torch.int64))
    assert math.isnan(scores.miou) and math.isnan(scores.pixel_accuracy) and scores.pixels == 0
    with pytest.raises(DataError):
        miou(torch.zeros(3, 4))


def test_cam_meters_skip_the_classes_no_image_has():
    """Leakage and contrast count only the classes in the labels: CAM values on the other
    channels change nothing (they are not even read), and the sums are the same."""
    from causal_wsss.metrics import ContrastMeter, LeakageMeter

    gen = torch.Generator().manual_seed(0)
    cams = torch.rand(3, 5, 12, 10, generator=gen)
    target = torch.randint(0, 6, (3, 12, 10), generator=gen)
    labels = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 1, 0], [1, 0, 0, 0, 0]]).float()
    noisy = cams.clone()
    noisy[:, [1, 2, 4]] = torch.rand(3, 3, 12, 10, generator=gen) * 7  # classes nobody has
    for meter in (LeakageMeter, ContrastMeter):
        a, b = meter(6), meter(6)
        a.update(cams, target, labels)
        b.update(noisy, target, labels)
        state_a = a.state if isinstance(a.state, tuple) else (a.state,)
        state_b = b.state if isinstance(b.state, tuple) else (b.state,)
        for x, y in zip(state_a, state_b):
            assert torch.equal(x, y)
            assert not x[[1, 2, 4]].any()  # absent classes add nothing
        # per image, one update each, the same sums as the batch
        c = meter(6)
        for i in range(3):
            c.update(cams[i:i + 1], target[i:i + 1], labels[i:i + 1])
        state_c = c.state if isinstance(c.state, tuple) else (c.state,)
        for x, y in zip(state_a, state_c):
            assert torch.allclose(x.double(), y.double())
