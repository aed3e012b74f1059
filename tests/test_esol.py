"""ESOL (``cam.method=esol``): the samplers, the gradient routing, the area loss, the CAM-method
registry and the stages end to end in the smoke preset (docs/esol.md, the CPU unit tests)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from causal_wsss.config import resolve
from causal_wsss.errors import ConfigError
from causal_wsss.models.cam_net import build_cam_net
from causal_wsss.models.esol_net import (
    DeformableSampler,
    EsolCamNet,
    FeatureClip,
    area_loss,
    dann_lambda,
    deformable_mean,
    grad_reverse,
)


def _base(context_channels: int = 0, seed: int = 0):
    torch.manual_seed(seed)
    return build_cam_net(3, backbone="tiny", weights="none", freeze_bn=False, freeze_stem=False,
                         context_channels=context_channels)


def _randomise_offsets(sampler: DeformableSampler, scale: float = 0.05) -> None:
    with torch.no_grad():
        sampler.offset_conv.weight.normal_(0, scale)
        sampler.offset_conv.bias.normal_(0, 1.0)


# ---------------------------------------------------------------------------------------------
# the sampling operator


@pytest.mark.parametrize("op", ["grid_sample", "deform_conv2d"])
def test_zero_offsets_with_the_mean_kernel_are_a_box_blur(op):
    x = torch.randn(2, 5, 7, 6)
    out = deformable_mean(x, torch.zeros(2, 18, 7, 6), op)
    torch.testing.assert_close(out, F.avg_pool2d(x, 3, 1, 1, count_include_pad=True))


def test_grid_sample_op_equals_torchvision_deform_conv2d_values_and_gradients():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6, 5, requires_grad=True)
    off = (torch.randn(2, 18, 6, 5) * 2.5).requires_grad_()  # many taps off the map
    grads = {}
    for op in ("grid_sample", "deform_conv2d"):
        x.grad = off.grad = None
        out = deformable_mean(x, off, op)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads[op] = (out.detach(), x.grad.clone(), off.grad.clone())
    for a, b in zip(grads["grid_sample"], grads["deform_conv2d"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_offsets_are_bounded_by_r_max():
    sampler = DeformableSampler(4, r_max=2.0)
    with torch.no_grad():
        sampler.offset_conv.bias.fill_(100.0)
    d = sampler.offsets(torch.randn(1, 4, 5, 5))
    assert d.abs().max() <= 2.0 + 1e-6 and d.abs().max() > 1.9


def test_dann_ramp():
    assert dann_lambda(0) == 0 and dann_lambda(1) == pytest.approx(1, abs=1e-4)
    assert 0 < dann_lambda(0.1) < dann_lambda(0.2) < 1


def test_grad_reverse_flips_and_scales():
    x = torch.ones(3, requires_grad=True)
    (grad_reverse(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_area_loss_is_invariant_to_positive_scaling():
    torch.manual_seed(0)
    a = torch.randn(3, 4, 5, 5)
    labels = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.float32)
    base = area_loss(a, labels)
    for s in (0.1, 3.0, 250.0):
        torch.testing.assert_close(area_loss(a * s, labels), base, rtol=1e-4, atol=1e-4)
    assert 0 < float(base) < 1
    # a map covering more of the image costs more
    wide, narrow = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    narrow[..., 0, 0] = 1
    one = torch.ones(1, 1)
    assert float(area_loss(wide, one)) > float(area_loss(narrow, one))
    assert float(area_loss(a, torch.zeros(3, 4))) == 0.0  # no labels, no term


def test_clip_calibrates_a_per_channel_quantile():
    clip = FeatureClip(2)
    x = torch.randn(1, 2, 3, 3)
    assert torch.equal(clip(x), x)  # +inf until calibrated
    samples = torch.stack([torch.arange(101.0), 10 * torch.arange(101.0)])
    torch.testing.assert_close(clip.calibrate(samples, 0.9), torch.tensor([90.0, 900.0]))
    assert clip(torch.full((1, 2, 1, 1), 1000.0)).flatten().tolist() == [90.0, 900.0]


# ---------------------------------------------------------------------------------------------
# the network and its gradient routing


def test_zero_offsets_without_clip_match_the_stage0_logits_up_to_the_box_blur():
    base = _base().eval()
    net = EsolCamNet(base).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        feats = base.trunk_features(x)
        blurred = F.avg_pool2d(feats, 3, 1, 1, count_include_pad=True)
        expected = base.classifier(blurred.mean(dim=(2, 3), keepdim=True)).flatten(1)
        for phase in ("expand", "shrink"):
            net.set_phase(phase)
            out = net(x)
            if phase == "expand":
                torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
            assert out.features.shape == feats.shape
        # features that are zero on a 2-cell border: the blur keeps their mean, so the logits
        # are the stage-0 logits (GAP is what the blur could change, and it cannot)
        inner = torch.zeros_like(feats)
        inner[..., 2:-2, 2:-2] = feats[..., 2:-2, 2:-2]
        base.trunk_features = lambda images: inner  # type: ignore[method-assign]
        net.set_phase("expand")
        torch.testing.assert_close(net(x).logits, base(x).logits, rtol=1e-5, atol=1e-5)


def test_the_identity_sampler_control_trains_only_the_heads_on_the_trunk_features():
    """``esol.sampler=identity`` (our control): no blur, no offsets; without the clip both heads
    read the stage-0 features themselves, so at initialisation they give the stage-0 logits."""
    base = _base().eval()
    net = EsolCamNet(base, sampler="identity").eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        feats = base.trunk_features(x)
        for phase in ("expand", "shrink"):
            net.set_phase(phase)
            out = net(x)
            torch.testing.assert_close(out.features, feats)
            torch.testing.assert_close(out.logits, base(x).logits, rtol=1e-5, atol=1e-5)
    # a training step moves the head and leaves the offset branch without a gradient
    net.train().set_phase("expand")
    net.freeze_for_phase()
    F.multilabel_soft_margin_loss(net(x).logits, torch.tensor([[1.0, 0, 1], [0, 1, 0]])).backward()
    assert net.cls_expand.weight.grad.abs().sum() > 0
    assert net.expand.offset_conv.weight.grad is None
    assert float(net.expand.mean_abs_offset) == 0.0
    with pytest.raises(ValueError, match="sampler"):
        EsolCamNet(_base(), sampler="blur")


def _train_step(net, x, labels, reverse: bool = True):
    net.expand.reverse = reverse
    net.zero_grad(set_to_none=True)
    out = net(x)
    F.multilabel_soft_margin_loss(out.logits, labels).backward()
    return ({k: v.grad.clone() for k, v in net.expand.offset_conv.named_parameters()},
            {k: v.grad.clone() for k, v in net.cls_expand.named_parameters()})


def test_the_reversal_flips_the_offset_gradient_only_and_reading_a_leaves_the_trunk_alone():
    base = _base()
    net = EsolCamNet(base)
    _randomise_offsets(net.expand)  # away from zero, where tanh and the sampler are smooth
    net.set_phase("expand")
    net.freeze_for_phase()
    net.train()
    net.expand.progress.fill_(1.0)
    lam = net.expand.lambda_rev()
    assert lam == pytest.approx(1.0, abs=1e-4)
    x, labels = torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    off_rev, head_rev = _train_step(net, x, labels, reverse=True)
    off_plain, head_plain = _train_step(net, x, labels, reverse=False)
    for k in off_rev:
        assert off_plain[k].abs().sum() > 0
        torch.testing.assert_close(off_rev[k], -lam * off_plain[k])
    for k in head_rev:
        torch.testing.assert_close(head_rev[k], head_plain[k])
    assert all(p.grad is None for p in base.parameters())  # reading A: no path into the trunk
    assert net.shrink.offset_conv.weight.grad is None


def test_reading_b_trains_the_trunk_but_not_through_the_offsets():
    base = _base()
    net = EsolCamNet(base, train_backbone=True)
    net.set_phase("expand")
    net.freeze_for_phase()
    net.train()
    assert base.backbone.training  # batch-norm etc. follow the stage-0 rules
    names = {g["name"] for g in net.param_groups(0.01, 0.001, 0.001)}
    assert names == {"offset", "head", "backbone"}
    net(torch.randn(2, 3, 64, 64)).logits.sum().backward()
    assert base.backbone.layer4[0].weight.grad is not None
    assert base.classifier.weight.grad is None  # the stage-0 head stays as it was


def test_a_shrinkage_step_leaves_the_expansion_network_bit_identical():
    base = _base()
    net = EsolCamNet(base)
    _randomise_offsets(net.expand)
    net.clip.calibrate(torch.rand(base.feature_channels, 50), 0.9)
    net.set_phase("shrink")
    net.start_shrink()
    net.freeze_for_phase()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()
              if not k.startswith(("shrink.", "cls_shrink."))}
    optimizer = torch.optim.SGD(net.param_groups(0.1, 0.1, 0.1), lr=0.1, momentum=0.9)
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    for _ in range(2):
        out = net(torch.randn(2, 3, 64, 64))
        loss = F.multilabel_soft_margin_loss(out.logits, labels) \
            + 0.1 * area_loss(net.class_maps(out.features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = net.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert not torch.equal(net.cls_shrink.weight, net.cls_expand.weight)


@pytest.mark.parametrize("context_channels", [0, 1])
def test_the_shrinkage_head_starts_from_the_trained_expansion_head(context_channels):
    # with a context channel the head is a SplitHead, whose ``weight`` is a fresh concatenation:
    # a copy into it changes nothing, so this must hold for both kinds of head
    net = EsolCamNet(_base(context_channels=context_channels))
    with torch.no_grad():
        for p in net.cls_expand.parameters():
            p.add_(torch.randn_like(p))
    assert not torch.equal(net.cls_shrink.weight, net.cls_expand.weight)
    net.set_phase("shrink")
    net.start_shrink()
    assert torch.equal(net.cls_shrink.weight, net.cls_expand.weight)
    assert net.cls_shrink.weight.shape[1] == net.feature_channels + context_channels
    with torch.no_grad():  # a copy, not shared parameters
        next(net.cls_shrink.parameters()).add_(1.0)
    assert not torch.equal(net.cls_shrink.weight, net.cls_expand.weight)


def test_the_context_channel_reaches_the_head_and_never_the_samplers():
    base = _base(context_channels=1)
    net = EsolCamNet(base)
    _randomise_offsets(net.expand)
    _randomise_offsets(net.shrink)
    assert net.classifier.weight.shape[1] == base.feature_channels + 1
    seen = []
    for sampler in (net.expand, net.shrink):
        sampler.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for phase in ("expand", "shrink"):
            net.set_phase(phase).eval()
            seen.clear()
            a = net(x, context=torch.zeros(1, 1, 16, 16))
            first = [s.clone() for s in seen]
            seen.clear()
            b = net(x, context=torch.rand(1, 1, 16, 16))
            for s, t in zip(first, seen):
                assert torch.equal(s, t)  # the samplers' outputs ignore m
            assert a.features.shape[1] == base.feature_channels + 1
            assert not torch.equal(a.features[:, -1], b.features[:, -1])


def test_multiscale_cams_work_unchanged_on_the_esol_network():
    from causal_wsss.cam import extract_cams

    net = EsolCamNet(_base())
    net.set_phase("shrink")
    images = torch.randint(0, 255, (2, 3, 40, 56), dtype=torch.uint8)
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    batch = extract_cams(net, images, labels, scales=(1.0, 0.5), amp=False)
    assert batch.high_res.shape == (3, 40, 56)
    assert float(batch.high_res.max()) <= 1.0


# ---------------------------------------------------------------------------------------------
# the registry and the configuration


def test_the_method_registry():
    from causal_wsss.methods import get_method, method_names, method_stages

    assert method_names() == ("irn", "esol")
    assert [s.name for s in get_method("esol").stages] == ["cam_expand", "cam_shrink", "esol_eval"]
    assert get_method("irn").stages == ()
    assert {s.method for s in method_stages().values()} == {"esol"}
    with pytest.raises(ConfigError, match="cam.method"):
        get_method("cutmix")


def test_esol_keys_are_overridable_and_range_checked():
    cfg = resolve("cpu", ["cam.method=esol", "esol.lambda_area=0.05", "esol.clip_q=0"])
    assert cfg.cam.method == "esol" and cfg.esol.lambda_area == 0.05 and cfg.esol.clip_q == 0
    with pytest.raises(ConfigError, match="esol.r_max"):
        resolve("cpu", ["esol.r_max=0"])
    with pytest.raises(ConfigError, match="esol.extract_from"):
        resolve("cpu", ["esol.extract_from=stage0"])
    assert resolve("cpu", ["esol.sampler=identity"]).esol.sampler == "identity"
    with pytest.raises(ConfigError, match="esol.sampler"):
        resolve("cpu", ["esol.sampler=blur"])


def test_irn_runs_keep_their_config_fingerprint():
    """Folders written before cam.method existed still resume: with irn, the ESOL keys are not
    part of the fingerprint; with esol they are."""
    from causal_wsss.runfolder import LATER_KEYS, config_fingerprint, legacy_config_fingerprint

    irn = resolve("smoke")
    assert config_fingerprint(irn) == config_fingerprint(resolve("smoke", ["esol.r_max=3"]))
    esol = resolve("smoke", ["cam.method=esol"])
    assert config_fingerprint(esol) != config_fingerprint(irn)
    assert config_fingerprint(esol) != config_fingerprint(resolve("smoke", ["cam.method=esol",
                                                                            "esol.r_max=3"]))
    data = irn.to_dict()
    data["cam"].pop("method")
    data.pop("esol")
    data.pop("paste")  # the interventions' sections, younger than the folder
    data.pop("negatives")
    import hashlib

    data.pop("rounds")
    for dotted in LATER_KEYS:  # keys younger than the folder, at their neutral values
        section, key = dotted.split(".")
        data.get(section, {}).pop(key, None)  # an IRN run's esol section is already gone
    old = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]
    assert legacy_config_fingerprint(irn) == old


# ---------------------------------------------------------------------------------------------
# the stages in the smoke preset


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from causal_wsss.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("synth_esol")
    generate_synthetic(out, n_train=24, n_val=8, rho=0.9, seed=0, size=96, twins=2,
                       progress=False)
    return out


def _cfg(root, *extra, rounds=1):
    return resolve("smoke", [f"data.root={root}", "cam.method=esol", "seg.iterations=6",
                             "cam.epochs=1", "cam_infer.scales=1.0", *extra],
                   seed=0, rounds=rounds)


def test_esol_runs_end_to_end_with_a_conta_round_and_reruns_nothing(synth, tmp_path):
    from causal_wsss.pipeline import run_experiment

    out = tmp_path / "run"
    report = run_experiment(_cfg(synth), out, progress=False)
    assert [e["round"] for e in report["rounds"]] == [0, 1]
    for entry in report["rounds"]:
        for key in ("cam_miou_best", "precision_best", "recall_best", "pseudo_miou", "seg_miou",
                    "esol_stage0_cam_miou_best", "esol_stage0_recall_best",
                    "esol_expand_cam_miou_best", "esol_expand_precision_best",
                    "esol_expand_outside_share"):
            assert key in entry, key
    for r in (0, 1):
        for stage in ("cam_train", "cam_expand", "cam_shrink", "esol_eval", "cams"):
            assert (out / f"round_{r}" / f"{stage}.json").is_file()
        assert (out / f"round_{r}" / "cam_shrink.pt").is_file()
        assert not (out / f"round_{r}" / "esol_cams").exists()  # diagnostics leave no cache
    shrink = json.loads((out / "round_0" / "cam_shrink.json").read_text())
    assert shrink["phase"] == "shrink" and shrink["lambda_rev_final"] == 0.0
    expand = json.loads((out / "round_0" / "cam_expand.json").read_text())
    assert expand["clip"]["clip_q"] == 0.9
    # a rerun trains nothing
    stamp = (out / "round_1" / "cam_shrink.pt").stat().st_mtime_ns
    assert run_experiment(_cfg(synth), out, progress=False) == report
    assert (out / "round_1" / "cam_shrink.pt").stat().st_mtime_ns == stamp
    # a missing expansion checkpoint redoes the expansion and everything computed from it
    (out / "round_1" / "cam_expand.pt").unlink()
    again = run_experiment(_cfg(synth), out, progress=False)
    assert (out / "round_1" / "cam_shrink.pt").stat().st_mtime_ns != stamp
    assert again["rounds"][0] == report["rounds"][0]
    assert (out / "round_0" / "cam_expand.pt").is_file()


def test_interrupted_expansion_resumes_to_the_same_weights(synth, tmp_path, monkeypatch):
    import causal_wsss.methods.esol as esol_mod
    from causal_wsss.pipeline import run_experiment

    cfg = _cfg(synth, "esol.epochs_expand=2", "esol.diagnostics=false", "data.twins_split=",
               rounds=0)
    run_experiment(cfg, tmp_path / "a", progress=False)

    original = esol_mod.EpochMonitor.on_epoch_end

    def kill_after_first_expansion_epoch(self, state):
        original(self, state)
        if self.name == "expand":
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(esol_mod.EpochMonitor, "on_epoch_end", kill_after_first_expansion_epoch)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(cfg, tmp_path / "b", progress=False)
    assert (tmp_path / "b" / "round_0" / "cam_expand.pt").is_file()
    assert not (tmp_path / "b" / "round_0" / "cam_expand.json").exists()
    torch.manual_seed(123)  # a new process does not share the old random state
    run_experiment(cfg, tmp_path / "b", progress=False)
    full = torch.load(tmp_path / "a" / "round_0" / "cam_shrink.pt", weights_only=False)["model"]
    resumed = torch.load(tmp_path / "b" / "round_0" / "cam_shrink.pt", weights_only=False)["model"]
    assert set(full) == set(resumed)
    for key in full:
        torch.testing.assert_close(full[key], resumed[key], rtol=0, atol=0, msg=key)


def test_the_results_table_script(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "esol_table", Path(__file__).resolve().parents[1] / "scripts" / "esol_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for seed, final in ((0, 40.0), (1, 42.0)):
        folder = tmp_path / f"esol_s{seed}"
        folder.mkdir()
        entry = {"round": 0, "cam_miou_best": final, "precision_best": 0.5, "recall_best": 0.6,
                 "esol_stage0_cam_miou_best": 39.0, "esol_expand_recall_best": 0.7,
                 "pseudo_miou": 38.0, "seg_miou": 37.0, "context_effect": float("nan")}
        (folder / "report.json").write_text(json.dumps({"rounds": [entry]}))
    module.main([f"esol={tmp_path}/esol_s*"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| esol r0 | 2 | 39.0 ± 0.0 |")
    assert "41.0 ± 1.0" in lines[2] and "0.70 ± 0.00" in lines[2]
