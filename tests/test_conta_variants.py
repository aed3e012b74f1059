"""The variants of the evidence protocol: the exact backdoor sum at the head, the context
parameters' own optimiser, and the per-epoch monitoring of what the adjustment learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from causal_wsss.config import resolve
from causal_wsss.data.synthetic import generate_synthetic
from causal_wsss.errors import DataError
from causal_wsss.models.cam_net import SplitHead, build_cam_net
from causal_wsss.models.context import ContextAdjustment
from causal_wsss.pipeline import run_experiment
from causal_wsss.train import OptimizerChain, poly_lambda, split_optimizer


def _net(seed: int = 0):
    torch.manual_seed(seed)
    net = build_cam_net(3, backbone="tiny", weights="none", context_channels=1,
                        freeze_bn=False, freeze_stem=False).eval()
    with torch.no_grad():
        net.classifier.context_weight[:] = torch.tensor([1.5, -2.0, 0.5]).view(3, 1, 1, 1)
    return net


def test_split_head_equals_one_conv_and_loads_old_checkpoints():
    net = _net()
    head = net.classifier
    assert isinstance(head, SplitHead) and head.weight.shape == (3, 65, 1, 1)
    x = torch.randn(2, 65, 4, 5)
    assert torch.allclose(head(x), F.conv2d(x, head.weight))
    # a checkpoint from before the split stored one (K, C + 1) weight
    old = {k: v for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    whole = torch.randn(3, 65, 1, 1)
    old["classifier.weight"] = whole
    fresh = _net(seed=1)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.classifier.weight, whole)


def test_context_parameters_get_their_own_group():
    net = _net()
    ctx = ContextAdjustment(np.random.rand(4, 4, 4), np.array([0.5, 0.3, 0.2]),
                            queries=np.random.rand(6, 16))
    net.new_modules["context"] = ctx
    groups = net.param_groups(0.1, head_lr_mult=10.0, context_lr=0.02)
    assert [g["name"] for g in groups] == ["backbone", "new", "context"]
    ids = {g["name"]: {id(p) for p in g["params"]} for g in groups}
    assert ids["context"] == {id(net.classifier.context_weight), id(ctx.w1.weight),
                              id(ctx.w2.weight)}
    assert id(net.classifier.feature_weight) in ids["new"]
    assert groups[2]["lr"] == 0.02 and groups[1]["lr"] == pytest.approx(1.0)
    assert net.param_groups(0.1)[2]["lr"] == pytest.approx(1.0)  # default: the 10x group
    every = [i for g in ids.values() for i in g]
    assert len(every) == len(set(every)) == sum(p.requires_grad for p in net.parameters())


def test_one_entry_mixture_is_the_ordinary_head():
    net = _net()
    images, ctx = torch.randn(2, 3, 32, 32), torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        plain = net(images, ctx)
        net.set_context_mixture(torch.tensor([1.0]))
        mixed = net(images, ctx)
    assert torch.allclose(plain.logits, mixed.logits, atol=1e-4)
    assert torch.allclose(net.cam_maps(plain.features), net.cam_maps(mixed.features), atol=1e-5)


def test_mixture_is_the_exact_backdoor_sum():
    """P(y | X) = sum_i w_i sigmoid(l_i), by hand; CAMs = sum_i w_i ReLU(W_f F + w_M c_i)."""
    net = _net()
    w = torch.tensor([0.5, 0.3, 0.2])
    entries = torch.rand(2, 3, 8, 8)
    images = torch.randn(2, 3, 32, 32)
    net.set_context_mixture(w)
    with torch.no_grad():
        out = net(images, entries)
        mixed_cams = net.cam_maps(out.features)
        net.set_context_mixture(None)
        per = [net(images, entries[:, i:i + 1]) for i in range(3)]
        cams = sum(w[i] * net.cam_maps(per[i].features) for i in range(3))
    p = sum(w[i] * torch.sigmoid(per[i].logits) for i in range(3))
    assert torch.allclose(torch.sigmoid(out.logits), p, atol=1e-5)
    assert torch.allclose(mixed_cams, cams, atol=1e-5)
    # the NWGM (one m = sum_i w_i c_i) differs from the exact sum when the logits differ
    with torch.no_grad():
        nwgm = net(images, (entries * w[None, :, None, None]).sum(1, keepdim=True))
    assert not torch.allclose(torch.sigmoid(nwgm.logits), p, atol=1e-4)
    net.set_context_mixture(w)
    with pytest.raises(DataError, match="sum to 1"):
        net.set_context_mixture(torch.tensor([0.5, 0.2]))


def test_exact_context_module_returns_every_valid_entry():
    dictionary = np.random.rand(5, 4, 4)  # background + 4 classes
    prior = np.array([0.4, 0.0, 0.4, 0.2])
    ctx = ContextAdjustment(dictionary, prior, queries=np.random.rand(3, 16), attention="exact")
    assert ctx.w1 is None and not list(ctx.parameters())
    out = ctx(index=torch.tensor([0, 2]))
    assert out.m.shape == (2, 3, 4, 4)  # the empty class 2 is left out
    assert torch.allclose(out.alpha[0], torch.tensor([0.4, 0.4, 0.2]))
    assert torch.allclose(out.m[1, 2], torch.as_tensor(dictionary[4], dtype=torch.float32))


def test_adamw_context_group_under_one_scheduler_and_resume():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    groups = [{"name": "new", "params": [a], "lr": 0.1},
              {"name": "context", "params": [b], "lr": 0.01}]
    opt = split_optimizer(groups, name="sgd", lr=0.1, weight_decay=0.0, momentum=0.9,
                          special_name="adamw")
    assert isinstance(opt, OptimizerChain) and len(opt.param_groups) == 2
    sched = torch.optim.lr_scheduler.LambdaLR(opt, poly_lambda(10, 0.9))
    for _ in range(2):
        opt.zero_grad()
        (a.sum() + 1e-6 * b.sum()).backward()  # a tiny gradient on b: AdamW still steps ~lr
        opt.step()
        sched.step()
    assert float((1 - b.detach()).mean()) > 0.01  # two steps of about lr each, whatever the scale
    assert opt.param_groups[1]["lr"] == pytest.approx(0.01 * poly_lambda(10, 0.9)(2))
    saved = opt.state_dict()
    again = split_optimizer(groups, name="sgd", lr=0.1, weight_decay=0.0, special_name="adamw")
    again.load_state_dict(saved)
    assert again.optimizers[1].state_dict()["state"][0]["step"] == 2
    same = split_optimizer(groups, name="sgd", lr=0.1, weight_decay=0.0, special_name="same")
    assert isinstance(same, torch.optim.SGD)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_variants")
    generate_synthetic(out, n_train=24, n_val=8, rho=0.9, seed=0, size=96, twins=2)
    return out


@pytest.mark.parametrize("extra", [["context.adjustment=exact"],
                                   ["context.optimizer=adamw", "context.lr=0.01"]])
def test_variants_run_end_to_end_with_epoch_monitoring(synth, tmp_path, extra):
    cfg = resolve("smoke", [f"data.root={synth}", *extra], seed=0, rounds=1)
    report = run_experiment(cfg, tmp_path / "run", progress=False)
    r1 = report["rounds"][1]
    assert np.isfinite(r1["cam_miou"]) and r1["context_effect"] is not None
    history = json.loads((tmp_path / "run" / "round_1" / "cam_train.json").read_text())["history"]
    assert len(history) == cfg.cam.epochs
    for entry in history:
        assert entry["w_m_abs"] >= 0 and 0 < entry["alpha_max_mean"] <= 1
        assert ("attention_logit_std" in entry) == (cfg.context.adjustment == "nwgm")
    if cfg.context.adjustment == "exact":  # the prior's weights, the same for every image
        assert r1["m_spread"] == pytest.approx(0.0, abs=1e-6)


def test_cam_checkpoint_evaluates_a_network_trained_elsewhere(synth, tmp_path):
    """cam.checkpoint: round 0 reuses a trained network (the interventional upper bound's
    cross-evaluation); the same network on the same data gives the same CAM scores."""
    from causal_wsss.errors import ConfigError

    base = run_experiment(resolve("smoke", [f"data.root={synth}"], seed=0, rounds=0),
                          tmp_path / "base", progress=False)
    ckpt = tmp_path / "base" / "round_0" / "cam_net.pt"
    cfg = resolve("smoke", [f"data.root={synth}", f"cam.checkpoint={ckpt}"], seed=0, rounds=0)
    moved = run_experiment(cfg, tmp_path / "moved", progress=False)
    record = json.loads((tmp_path / "moved" / "round_0" / "cam_train.json").read_text())
    assert record["transferred_from"] == str(ckpt.resolve()) and record["epochs"] == 0
    for key in ("cam_miou", "cam_miou_best", "context_effect"):
        assert moved["rounds"][0][key] == pytest.approx(base["rounds"][0][key], abs=1e-6)
    bad = resolve("smoke", [f"data.root={synth}", f"cam.checkpoint={tmp_path / 'nope.pt'}"],
                  seed=0, rounds=0)
    with pytest.raises(ConfigError, match="cam.checkpoint"):
        run_experiment(bad, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
