"""Hostile inputs to the public functions of causal_wsss.metrics and causal_wsss.backdoor.

Each bad argument is refused with the project's own error (``DataError``, a ``ValueError``, for
tensors and arrays; ``ConfigError`` where the module already uses it for the same argument),
one line naming the argument; never a raw IndexError / RuntimeError from deep inside, an
allocation of many GB, or a silently wrong number. numpy arrays are accepted where a tensor is,
with the same results.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from causal_wsss.backdoor import (
    MAX_STRATA,
    backdoor_adjust,
    context_attention,
    empirical_backdoor,
    expected_sigmoid,
    nwgm_error_bound,
    nwgm_sigmoid,
)
from causal_wsss.errors import ConfigError, DataError
from causal_wsss.metrics import (
    MAX_THRESHOLDS,
    ConfusionMatrix,
    ContrastMeter,
    LeakageMeter,
    ThresholdSweep,
    cams_to_labels,
    foreground_recall,
    iou_per_class,
    mean_iou,
    miou,
    precision_split,
    scores_from_confusion,
    threshold_grid,
)

torch.set_num_threads(1)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def _cam_batch(seed: int = 0, batch: int = 2, num_fg: int = 3, size: int = 6):
    gen = torch.Generator().manual_seed(seed)
    cams = torch.rand(batch, num_fg, size, size, generator=gen)
    labels = (torch.rand(batch, num_fg, generator=gen) < 0.7).float()
    target = torch.randint(0, num_fg + 1, (batch, size, size), generator=gen)
    target[0, 0, 0] = 255
    return cams, labels, target


# --- case 1: cams_to_labels -------------------------------------------------------------------


def test_cams_to_labels_refuses_nan_inf_negative_cams_and_no_class() -> None:
    cams, labels, _ = _cam_batch()
    nan = cams.clone()
    nan[0, 1, 2, 2] = math.nan  # was silently background
    with pytest.raises(DataError, match="NaN or infinite") as exc:
        cams_to_labels(nan, 0.15)
    assert _one_line(exc).startswith("cams_to_labels: cams")
    inf = cams.clone()
    inf[1, 0, 0, 0] = math.inf
    with pytest.raises(DataError, match="NaN or infinite"):
        cams_to_labels(inf, 0.15)
    with pytest.raises(DataError, match=r"negative values \(min -1\)"):  # was accepted
        cams_to_labels(torch.cat([cams, -torch.ones(2, 1, 6, 6)], 1), 0.15)
    tiny = cams.clone()
    tiny[0, 0, 0, 0] = -1e-7  # CAMs are ReLU'd then divided by their max: exactly >= 0
    with pytest.raises(DataError, match="negative"):
        cams_to_labels(tiny, 0.15)
    with pytest.raises(DataError, match="no class channel"):  # was a raw IndexError
        cams_to_labels(torch.zeros(2, 0, 4, 4), 0.15)
    with pytest.raises(DataError, match="no class channel"):
        cams_to_labels(torch.zeros(0, 4, 4), 0.15)
    with pytest.raises(DataError, match="threshold must be finite"):  # was all background
        cams_to_labels(cams, math.nan)
    with pytest.raises(DataError, match="threshold must be a number"):
        cams_to_labels(cams, "0.15")
    # the boundary stays valid: all-zero CAMs are background everywhere
    assert int(cams_to_labels(torch.zeros(3, 4, 4), 0.0).abs().sum()) == 0
    assert cams_to_labels(cams, 0.15, labels).shape == (2, 6, 6)


def test_cam_meters_refuse_nan_and_negative_cams() -> None:
    cams, labels, target = _cam_batch()
    for meter in (ThresholdSweep(4, (0.1, 0.2)), LeakageMeter(4), ContrastMeter(4)):
        name = type(meter).__name__
        args = (target,) if isinstance(meter, ThresholdSweep) else (target, labels)
        with pytest.raises(DataError, match=f"{name}.update: cams hold negative"):
            meter.update(cams - 0.5, *args)  # ThresholdSweep and ContrastMeter accepted these
        bad = cams.clone()
        bad[1, 2, 3, 3] = math.nan
        with pytest.raises(DataError, match=f"{name}.update: cams contain NaN"):
            meter.update(bad, *args)
        with pytest.raises(DataError, match="foreground CAM channels"):
            meter.update(cams[:, :0], *args)


# --- case 2: miou and the other confusion-matrix functions -----------------------------------


def test_miou_refuses_class_indices_out_of_range() -> None:
    conf = torch.tensor([[4, 1, 1], [1, 4, 0], [0, 1, 3]])
    with pytest.raises(DataError, match=r"miou: classes holds \[5\].*\[0, 2\]") as exc:
        miou(conf, classes=[0, 5])  # was a raw IndexError
    _one_line(exc)
    with pytest.raises(DataError, match=r"holds \[-1\]"):  # was silently the last class
        miou(conf, classes=[0, -1])
    with pytest.raises(DataError, match="more than once"):  # was counted twice
        miou(conf, classes=[1, 1, 2])
    with pytest.raises(DataError, match="integer label indices"):
        miou(conf, classes=[0, 1.0])
    for fn in (scores_from_confusion, precision_split, foreground_recall):
        with pytest.raises(DataError, match=f"{fn.__name__}: classes holds"):
            fn(conf, [1, 3])  # each was a raw IndexError
    with pytest.raises(DataError, match=r"mean_iou: classes holds \[3\]"):
        mean_iou(iou_per_class(conf), [3])
    with pytest.raises(DataError, match="0-d"):
        mean_iou(torch.tensor(0.5), [0])
    assert miou(conf, classes=(0, 2)) == pytest.approx((4 / 7 + 3 / 5) / 2)


def test_miou_refuses_negative_and_nan_counts() -> None:
    negative = torch.tensor([[-1, -1], [2, 1]])
    with pytest.raises(DataError, match="negative counts"):
        miou(negative)  # was silently 0.5
    nan = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, math.nan], [0.0, 0.0, 1.0]])
    with pytest.raises(DataError, match="NaN or infinite counts"):
        miou(nan)  # was silently 1.0
    with pytest.raises(DataError, match="NaN or infinite counts"):
        miou(torch.tensor([[1.0, math.inf], [0.0, 1.0]]))
    for fn in (iou_per_class, scores_from_confusion, precision_split, foreground_recall):
        with pytest.raises(DataError, match=f"{fn.__name__}: the confusion matrix holds"):
            fn(negative)
    with pytest.raises(DataError, match="negative counts"):
        ConfusionMatrix.from_state(negative)
    assert miou(torch.tensor([[3.0, 1.0], [0.0, 2.0]])) == pytest.approx((3 / 4 + 2 / 3) / 2)


# --- case 3: class names ---------------------------------------------------------------------


def test_precision_split_and_contrast_refuse_too_few_class_names() -> None:
    conf = torch.tensor([[4, 1, 1], [1, 4, 0], [0, 1, 3]])
    with pytest.raises(ConfigError, match="precision_split: 2 class names for 3 classes") as exc:
        precision_split(conf, class_names=["background", "cat"])  # was a raw IndexError
    _one_line(exc)
    names = ["background", "cat", "dog"]
    assert set(precision_split(conf, class_names=names)["per_class"]) == {"cat", "dog"}
    meter = ContrastMeter(4)
    cams, labels, target = _cam_batch()
    meter.update(cams, target, labels)
    with pytest.raises(ConfigError, match="ContrastMeter.compute: 3 class names for 4"):
        meter.compute(class_names=names)  # was a raw IndexError


# --- case 4: threshold grids -----------------------------------------------------------------


def test_threshold_grid_refuses_grids_that_cannot_fit() -> None:
    # the small cases first: without the bound, the test fails here, before the 22 GB one
    assert len(threshold_grid(0, 0.9999, 1e-4)) == MAX_THRESHOLDS
    with pytest.raises(ConfigError, match=f"more than the {MAX_THRESHOLDS} allowed") as exc:
        threshold_grid(0, 1, 1e-4)  # 10001 values
    _one_line(exc)
    with pytest.raises(ConfigError, match="allowed"):
        threshold_grid(0, 1, 5e-324)  # the count overflows to inf
    with pytest.raises(ConfigError, match="allowed"):
        threshold_grid(0, 1, 1e-9)  # took 22 GB before being killed
    for start, stop, step in ((0, 1, 0), (0, 1, -0.1), (0, math.inf, 0.1), (math.nan, 1, 0.1),
                              (0.5, 0.1, 0.1)):
        with pytest.raises(ConfigError):
            threshold_grid(start, stop, step)
    with pytest.raises(ConfigError, match="expected numbers"):  # was a raw TypeError
        threshold_grid("0.05", 0.6, 0.01)
    with pytest.raises(ConfigError, match="allowed"):
        ThresholdSweep(3, np.linspace(0, 1, MAX_THRESHOLDS + 1))


# --- case 7: numpy arrays, metrics -----------------------------------------------------------


def test_numpy_arrays_in_metrics_give_the_tensor_results() -> None:
    gen = torch.Generator().manual_seed(7)
    pred, target = torch.randint(0, 3, (2, 5, 5), generator=gen), torch.randint(0, 3, (2, 5, 5), generator=gen)
    from_tensors, from_arrays = ConfusionMatrix(3), ConfusionMatrix(3)
    from_tensors.update(pred, target)
    from_arrays.update(pred.numpy(), target.numpy())  # was AttributeError
    assert torch.equal(from_arrays.state, from_tensors.state)
    flipped = ConfusionMatrix(3)
    flipped.update(pred.numpy()[:, ::-1], target.numpy()[:, ::-1])  # negative strides
    assert torch.equal(flipped.state, from_tensors.state)
    assert miou(from_tensors.state.numpy()) == miou(from_tensors.state)

    cams, labels, target = _cam_batch()
    assert torch.equal(cams_to_labels(cams.numpy(), 0.2, labels.numpy()),
                       cams_to_labels(cams, 0.2, labels))
    sweeps = ThresholdSweep(4, (0.1, 0.3)), ThresholdSweep(4, (0.1, 0.3))
    sweeps[0].update(cams, target, labels)
    sweeps[1].update(cams.numpy(), target.numpy(), labels.numpy())
    assert torch.equal(sweeps[0].state, sweeps[1].state)
    leaks = LeakageMeter(4), LeakageMeter(4)
    leaks[0].update(cams, target, labels)
    leaks[1].update(cams.numpy(), target.numpy(), labels.numpy())
    assert torch.equal(leaks[0].state[0], leaks[1].state[0])
    with pytest.raises(DataError, match="pred must be a torch.Tensor or a numpy array, got list"):
        ConfusionMatrix(3).update([[0, 1]], target[0])


# === causal_wsss.backdoor ===================================================================


# --- case 5: empirical_backdoor --------------------------------------------------------------


def _xyc():
    x = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    y = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    c = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    return x, y, c


def test_empirical_backdoor_refuses_fractional_codes() -> None:
    x, y, c = _xyc()
    fractional = x.double()
    fractional[0] = 0.4  # was silently truncated to 0
    with pytest.raises(DataError, match="x must hold integer codes.*0.4") as exc:
        empirical_backdoor(fractional, y, c)
    _one_line(exc)
    with pytest.raises(DataError, match="c must hold integer codes"):
        empirical_backdoor(x, y, c.double() + 0.5)
    with pytest.raises(DataError, match="x must hold integer codes"):
        empirical_backdoor(torch.full((8,), math.nan), y, c)
    with pytest.raises(DataError, match="y holds NaN"):  # was a NaN estimate
        empirical_backdoor(x, torch.where(x == 0, math.nan, y), c)
    # integer-valued floats (a pandas column) are those integers
    ref = empirical_backdoor(x, y, c)
    same = empirical_backdoor(x.double(), y, c.float())
    assert torch.equal(same.p_y_do_x, ref.p_y_do_x) and same.ate == ref.ate


def test_empirical_backdoor_refuses_sizes_that_cannot_fit() -> None:
    x, y, c = _xyc()
    with pytest.raises(DataError, match=r"num_x must be an integer, got 10000000000\.0"):
        empirical_backdoor(x, y, c, num_x=1e10)  # was a raw 80 GB allocation error
    with pytest.raises(DataError, match=f"more than the {MAX_STRATA:,} allowed") as exc:
        empirical_backdoor(x, y, c, num_x=10**10)
    _one_line(exc)
    with pytest.raises(DataError, match="strata"):
        empirical_backdoor(x, y, c, num_c=10**7)
    huge = c.clone()
    huge[0] = 10**9  # an identifier, not a code: the data's own range is too large
    with pytest.raises(DataError, match="recode"):
        empirical_backdoor(x, y, huge)
    # a large but allowed num_x: the positivity error lists a few strata, not all of them
    with pytest.raises(DataError, match=r"\] and 186 more; positivity fails") as exc:
        empirical_backdoor(x, y, c, num_x=100)
    assert len(str(exc.value)) < 400


# --- case 6: context_attention ---------------------------------------------------------------


def _attention_args(e: int = 4):
    gen = torch.Generator().manual_seed(3)
    query, dictionary = torch.rand(2, 5, generator=gen), torch.rand(3, 6, generator=gen)
    prior = torch.tensor([0.5, 0.3, 0.2])
    return query, dictionary, prior, torch.randn(e, 5, generator=gen), torch.randn(e, 6, generator=gen)


def test_context_attention_refuses_degenerate_inputs() -> None:
    query, dictionary, prior, w1, w2 = _attention_args()
    with pytest.raises(DataError, match="embedding size e = 0") as exc:
        context_attention(query, dictionary, prior, w1[:0], w2[:0])  # was ZeroDivisionError
    _one_line(exc)
    with pytest.raises(DataError, match="query must be a floating tensor, got dtype torch.int64"):
        context_attention(query.long(), dictionary, prior, w1, w2)  # was a raw RuntimeError
    with pytest.raises(DataError, match=r"prior must hold finite probabilities.*-0\.5"):
        context_attention(query, dictionary, torch.tensor([1.5, -0.5, 0.0]), w1, w2)  # accepted
    with pytest.raises(DataError, match="prior must hold finite probabilities"):
        context_attention(query, dictionary, torch.tensor([math.nan, 0.5, 0.5]), w1, w2)
    with pytest.raises(DataError, match="dictionary of shape \\(0, 6\\) is empty"):
        context_attention(query, dictionary[:0], prior[:0], w1, w2)  # returned zeros
    with pytest.raises(DataError, match=r"b1 must have shape \(4,\)"):
        context_attention(query, dictionary, prior, w1, w2, b1=torch.zeros(3))
    with pytest.raises(DataError, match="one dtype outside autocast"):
        context_attention(query.double(), dictionary, prior, w1, w2)
    with pytest.raises(DataError, match="one device"):
        context_attention(query, dictionary, prior.to("meta"), w1, w2)
    with pytest.raises(DataError, match="scale must be finite"):
        context_attention(query, dictionary, prior, w1, w2, scale=math.inf)
    with pytest.raises(DataError, match="every dictionary entry"):  # still one message
        context_attention(query, dictionary, prior, w1, w2, mask=torch.zeros(3, dtype=torch.bool))
    m, alpha = context_attention(query, dictionary, prior, w1, w2)
    assert m.shape == (2, 6) and torch.allclose(alpha.sum(-1), torch.ones(2))


# --- case 7: numpy arrays, backdoor ----------------------------------------------------------


def test_numpy_arrays_in_backdoor_give_the_tensor_results() -> None:
    gen = torch.Generator().manual_seed(7)
    table = torch.rand(4, 3, 2, generator=gen, dtype=torch.float64)
    prior = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    expected = backdoor_adjust(table, prior)
    assert torch.equal(backdoor_adjust(table.numpy(), prior.numpy()), expected)  # was AttributeError
    assert torch.equal(backdoor_adjust(table, prior.numpy()), expected)
    assert torch.equal(nwgm_sigmoid(table.numpy(), prior.numpy()), nwgm_sigmoid(table, prior))
    x, y, c = _xyc()
    ref = empirical_backdoor(x, y, c, prior=torch.tensor([0.4, 0.6], dtype=torch.float64))
    arrays = empirical_backdoor(x.numpy(), y.numpy(), c.numpy(), prior=np.array([0.4, 0.6]))
    assert torch.equal(arrays.p_y_do_x, ref.p_y_do_x) and arrays.ate == ref.ate
    with pytest.raises(DataError, match="prior must be a torch.Tensor or a numpy array"):
        backdoor_adjust(table, [0.2, 0.3, 0.5])


def test_integer_tables_and_logits_are_refused_not_truncated() -> None:
    table = torch.ones(2, 3, 1, dtype=torch.long)
    prior = torch.full((3,), 1 / 3)
    with pytest.raises(DataError, match="p_y_given_x_c must be a floating tensor"):
        backdoor_adjust(table, prior)  # was silently 0 (the prior truncated to int)
    for fn in (expected_sigmoid, nwgm_sigmoid, nwgm_error_bound):
        with pytest.raises(DataError, match=f"{fn.__name__}: logits_per_c must be a floating"):
            fn(table, prior)  # expected_sigmoid was a raw RuntimeError
    assert torch.allclose(backdoor_adjust(table.float(), prior), torch.ones(2, 1))
