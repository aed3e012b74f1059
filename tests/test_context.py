"""ContextAdjustment: shapes, gradients to W1/W2, masked classes, alignment under flip and crop."""

from __future__ import annotations

import math

import torch

from causal_wsss.models.context import ContextAdjustment


def _module(n=3, g=4, **kw):
    gen = torch.Generator().manual_seed(0)
    dictionary = torch.rand(n + 1, g, g, generator=gen)
    prior = torch.tensor([0.5, 0.5, 0.0][:n])
    queries = (torch.rand(6, g * g, generator=gen) > 0.5).to(torch.uint8)
    return ContextAdjustment(dictionary, prior, queries=queries, **kw), dictionary, prior, queries


def test_shapes_and_formula():
    mod, dictionary, prior, queries = _module()
    out = mod(index=torch.tensor([0, 2]))
    assert out.m.shape == (2, 1, 4, 4) and out.alpha.shape == (2, 3)
    # alpha = softmax over valid classes of (W1 q)(W2 c)^T / sqrt(e); m = sum alpha P c
    q = queries[[0, 2]].float() @ mod.w1.weight.T
    k = dictionary[1:].reshape(3, -1) @ mod.w2.weight.T
    scores = q @ k.T / math.sqrt(4)
    scores[:, 2] = -math.inf  # prior 0 -> masked
    alpha = scores.softmax(-1)
    m = (alpha * prior) @ dictionary[1:].reshape(3, -1)
    torch.testing.assert_close(out.alpha, alpha)
    torch.testing.assert_close(out.m.reshape(2, -1), m)
    assert torch.all(out.alpha[:, 2] == 0)


def test_gradients_reach_w1_w2():
    mod, *_ = _module()
    out = mod(index=torch.tensor([0, 1, 2]))
    (out.m * torch.arange(16.0).reshape(1, 1, 4, 4)).sum().backward()
    assert mod.w1.weight.grad is not None and mod.w1.weight.grad.abs().sum() > 0
    assert mod.w2.weight.grad is not None and mod.w2.weight.grad.abs().sum() > 0


def test_max_scale():
    mod, *_ = _module(m_scale="max")
    m = mod(index=torch.tensor([1])).m
    assert torch.isclose(m.max(), torch.tensor(1.0))


def test_align_identity_crop_and_flip():
    m = torch.arange(16.0).reshape(1, 1, 4, 4)
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    out = ContextAdjustment.align(m, full, torch.tensor([False]), (4, 4))
    torch.testing.assert_close(out, m)
    out = ContextAdjustment.align(m, full, torch.tensor([True]), (4, 4))
    torch.testing.assert_close(out, m.flip(-1))
    # right half of the image, then flipped
    half = torch.tensor([[0.5, 0.0, 1.0, 1.0]])
    out = ContextAdjustment.align(m, half, torch.tensor([False]), (4, 2))
    torch.testing.assert_close(out, m[..., 2:])
    # a crop that extends beyond the image reads zero context there
    pad = torch.tensor([[0.0, 0.0, 2.0, 1.0]])
    out = ContextAdjustment.align(m, pad, torch.tensor([False]), (4, 8))
    torch.testing.assert_close(out[..., :4], m)
    assert torch.all(out[..., 4:] == 0)


def test_uniform_attention_control_gives_one_map_for_all_images():
    mod, dictionary, prior, _ = _module(attention="uniform")
    assert mod.w1 is None and mod.w2 is None and not list(mod.parameters())
    out = mod(index=torch.tensor([0, 1, 5]))
    # two valid classes (prior > 0): alpha = 1/2 each, m = sum_i alpha_i P(c_i) c_i
    torch.testing.assert_close(out.alpha, torch.tensor([[0.5, 0.5, 0.0]]).expand(3, -1))
    expected = 0.5 * (0.5 * dictionary[1] + 0.5 * dictionary[2])
    for m in out.m:
        torch.testing.assert_close(m[0], expected)


def test_context_keys_are_checked_before_anything_runs(tmp_path):
    import pytest

    from causal_wsss.config import apply_overrides, preset, resolve
    from causal_wsss.errors import ConfigError
    from causal_wsss.stages.confounders import check_context_config

    for key in ("attention=attend", "prior=zipf", "fuse_at=input", "m_scale=log", "query=rgb"):
        overrides = [f"context.{key}", f"data.root={tmp_path}"]
        with pytest.raises(ConfigError, match=f"context.{key.split('=')[0]}"):
            resolve("smoke", overrides)  # refused when the config is resolved
        cfg = apply_overrides(preset("smoke"), overrides)  # or built without resolve()
        with pytest.raises(ConfigError, match=f"context.{key.split('=')[0]}"):
            check_context_config(cfg)


def test_attention_summary_tells_a_constant_attention_from_an_image_specific_one():
    from causal_wsss.stages.cam_train import attention_summary

    mod, *_ = _module(attention="uniform")
    s = attention_summary(mod)
    assert s["alpha_max_mean"] == s["alpha_uniform"] == 0.5
    assert s["alpha_top_class_share"] == 1.0 and abs(s["m_spread"]) < 1e-6
    # two disjoint class blobs; each image's query is one of them; W1 = W2 = 10 I
    dictionary = torch.zeros(3, 4, 4)
    dictionary[1].view(-1)[:8] = 1.0
    dictionary[2].view(-1)[8:] = 1.0
    queries = dictionary[[1, 2, 1, 2]].reshape(4, -1)
    learned = ContextAdjustment(dictionary, torch.tensor([0.5, 0.5]), queries=queries,
                                embed_dim=16)
    with torch.no_grad():
        learned.w1.weight.copy_(10 * torch.eye(16))
        learned.w2.weight.copy_(10 * torch.eye(16))
    s = attention_summary(learned)
    assert s["alpha_max_mean"] > 0.99 and s["alpha_top_class_share"] == 0.5
    assert s["m_spread"] > 0.5
