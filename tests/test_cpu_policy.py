"""The CPU speed-ups that change no result: subnormal gradients flushed at the loss, and
data-loader processes started only on cores torch's compute threads leave free."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from causal_wsss import runtime
from causal_wsss.runtime import flush_denormal_grads, loader_workers, use_speedups
from causal_wsss.segmentation import segmentation_loss

TINY = torch.finfo(torch.float32).tiny


def subnormal_count(t: torch.Tensor) -> int:
    return int(((t != 0) & (t.abs() < TINY)).sum())


def confident_logits() -> torch.Tensor:
    """(1, 3, 2, 2) logits whose softmax puts about 1e-40 on class 2: its gradient is subnormal."""
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 92.0
    return x


def plain_gradient_is_subnormal() -> bool:
    """The premise of the speed-up: plain autograd hands the network subnormal numbers (true
    wherever torch's exp returns subnormal results, as on the CPUs this was measured on)."""
    logits = confident_logits().requires_grad_()
    F.cross_entropy(logits, torch.zeros(1, 2, 2, dtype=torch.long)).backward()
    return subnormal_count(logits.grad) > 0


def test_segmentation_loss_hands_back_no_subnormal_gradient():
    if not plain_gradient_is_subnormal():
        pytest.skip("this CPU's exp flushes subnormal results itself: nothing to flush")
    masks = torch.zeros(1, 2, 2, dtype=torch.long)
    for enabled, expect_subnormals in ((True, False), (False, True)):
        with use_speedups(enabled):
            leaf = confident_logits().requires_grad_()
            logits = leaf * 1.0  # a non-leaf, as a network's output is
            seen = {}
            logits.register_hook(lambda g, seen=seen: seen.setdefault("g", g.clone()))
            segmentation_loss(logits, masks).backward()
        # hooks run in the order registered: the loss's flush is the later one, so what
        # reaches the leaf (the network below) is what counts
        assert (subnormal_count(leaf.grad) > 0) == expect_subnormals
        if enabled:  # every other value is left exactly as it was
            normal = seen["g"].abs() >= TINY
            assert torch.equal(leaf.grad[normal], seen["g"][normal])


def test_flush_keeps_normal_values_and_zeros_only_subnormal_ones():
    x = torch.zeros(4, requires_grad=True)
    with use_speedups(True):
        y = flush_denormal_grads(x * 1.0)
    grad = torch.tensor([1e-39, -1e-40, 2e-38, -3.0])
    y.backward(grad)
    assert x.grad.tolist() == [0.0, 0.0, grad[2].item(), -3.0]


def test_flush_registers_nothing_without_grad_or_with_speedups_off():
    t = torch.ones(3)
    assert flush_denormal_grads(t) is t  # no grad: returned as it is
    x = torch.zeros(2, requires_grad=True)
    with use_speedups(False):
        y = flush_denormal_grads(x * 1.0)
    y.backward(torch.tensor([1e-40, 1.0]))
    assert subnormal_count(x.grad) == 1


def test_loader_workers_only_on_cores_the_compute_threads_leave_free(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    with use_speedups(True):
        assert loader_workers(2, "cpu") == 0
        assert loader_workers(2, torch.device("cuda")) == 2  # a GPU computes elsewhere
        assert loader_workers(0, "cpu") == 0
    with use_speedups(False):
        assert loader_workers(2, "cpu") == 2  # the code path from before
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 8)
    with use_speedups(True):
        assert loader_workers(2, "cpu") == 2
        assert loader_workers(8, "cpu") == 6


def test_numerics_level_follows_the_switch(monkeypatch):
    from causal_wsss.constants import NUMERICS
    from causal_wsss.runtime import numerics_level, speedups_enabled

    monkeypatch.delenv(runtime.SPEEDUPS_ENV, raising=False)
    assert numerics_level() == NUMERICS and speedups_enabled()
    for value, level in (("0", 1), ("off", 1), ("2", 2), ("1", NUMERICS)):
        monkeypatch.setenv(runtime.SPEEDUPS_ENV, value)
        assert numerics_level() == level
        assert speedups_enabled() == (level >= 2)
    with use_speedups(2):  # a block overrides the variable, innermost first
        assert numerics_level() == 2
        with use_speedups(True):
            assert numerics_level() == NUMERICS
        with use_speedups(False):
            assert numerics_level() == 1 and not speedups_enabled()
    from causal_wsss.errors import ConfigError
    with pytest.raises(ConfigError, match="numerics version 9"):
        with use_speedups(9):
            pass


def test_cam_training_runs_channels_last_on_the_cpu_from_numerics_3():
    from causal_wsss.runtime import train_channels_last

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with use_speedups(3):
        assert train_channels_last(cpu, True) and not train_channels_last(cpu, False)
    with use_speedups(2):
        assert not train_channels_last(cpu, True)  # numerics 2 trained contiguous on the CPU
        assert train_channels_last(cuda, True)


def test_a_resumed_run_warns_when_its_stages_were_made_in_another_precision(tmp_path,
                                                                            monkeypatch):
    """A run folder finished on one code path or precision and resumed on another: one warning
    per stamp, naming the first record, both values and what to do; nothing for matching or
    unstamped records, nor for an unreadable one (the stage check names those)."""
    import json
    import logging

    from causal_wsss.constants import NUMERICS
    from causal_wsss.pipeline import warn_mixed_numerics
    from causal_wsss.runtime import CPU_AMP_ENV

    monkeypatch.delenv(CPU_AMP_ENV, raising=False)
    monkeypatch.delenv(runtime.SPEEDUPS_ENV, raising=False)
    cpu, logger = torch.device("cpu"), logging.getLogger("test_mixed")
    r0 = tmp_path / "round_0"
    r0.mkdir()
    (r0 / "cams.json").write_text(json.dumps({"numerics": NUMERICS, "autocast_dtype": "float32"}))
    (r0 / "pseudo.json").write_text(json.dumps({"seconds": 1.0}))  # made before the stamps
    (r0 / "broken.json").write_text("{not json")
    assert warn_mixed_numerics(tmp_path, cpu, logger) == []
    (r0 / "cam_train.json").write_text(json.dumps({"numerics": 2, "autocast_dtype": "bfloat16"}))
    (tmp_path / "round_1").mkdir()
    (tmp_path / "round_1" / "cams.json").write_text(json.dumps({"numerics": 2}))
    notes = warn_mixed_numerics(tmp_path, cpu, logger)
    assert len(notes) == 2  # one per stamp, not one per record
    assert "round_0/cam_train.json" in notes[0] and "numerics=2" in notes[0]
    assert f"numerics={NUMERICS}" in notes[0] and "CAUSAL_WSSS_SPEEDUPS" in notes[0]
    assert "autocast_dtype=bfloat16" in notes[1] and "autocast_dtype=float32" in notes[1]
    assert CPU_AMP_ENV in notes[1]
    monkeypatch.setenv(CPU_AMP_ENV, "1")  # the same folder resumed with bf16 on the CPU
    monkeypatch.setenv(runtime.SPEEDUPS_ENV, "2")
    notes = warn_mixed_numerics(tmp_path, cpu, logger)
    assert len(notes) == 2 and "round_0/cams.json" in notes[0] and "round_0/cams.json" in notes[1]


def test_a_resumed_run_warns_when_its_stages_ran_on_another_thread_count(tmp_path):
    """A CPU's floats depend on the thread count: the records stamp it and a resume on another
    count warns once, naming what to set; matching or unstamped records and GPUs say nothing."""
    import json
    import logging

    from causal_wsss.pipeline import warn_mixed_numerics

    cpu, logger = torch.device("cpu"), logging.getLogger("test_threads")
    r0 = tmp_path / "round_0"
    r0.mkdir()
    now = torch.get_num_threads()
    (r0 / "cams.json").write_text(json.dumps({"torch_threads": now}))
    (r0 / "pseudo.json").write_text(json.dumps({"seconds": 1.0}))
    assert warn_mixed_numerics(tmp_path, cpu, logger) == []
    (r0 / "seg_train.json").write_text(json.dumps({"torch_threads": now + 1}))
    (r0 / "seg_eval.json").write_text(json.dumps({"torch_threads": now + 1}))
    notes = warn_mixed_numerics(tmp_path, cpu, logger)
    assert len(notes) == 1 and f"torch_threads={now + 1}" in notes[0]
    assert f"torch_threads={now}" in notes[0] and "OMP_NUM_THREADS" in notes[0]
    assert warn_mixed_numerics(tmp_path, torch.device("cuda"), logger) == []
