"""Config presets, dotted overrides and their error messages."""

from __future__ import annotations

import json

import pytest

from causal_wsss.config import (
    PRESETS,
    ExperimentConfig,
    apply_overrides,
    check_config,
    preset,
    resolve,
)
from causal_wsss.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name, tmp_path):
    cfg = preset(name)
    assert cfg.preset == name
    cfg.save(tmp_path / "config.json")
    again = ExperimentConfig.load(tmp_path / "config.json")
    assert again == cfg


def test_paper_preset_follows_method_md():
    cfg = preset("paper")
    assert cfg.cam.backbone == "resnet50" and cfg.cam.output_stride == 16
    assert cfg.cam.crop_size == 512 and cfg.cam.batch_size == 16 and cfg.cam.epochs == 5
    assert cfg.cam.lr == 0.1 and cfg.cam.head_lr_mult == 10.0 and cfg.cam.momentum == 1e-4
    assert cfg.cam_infer.scales == (1.0, 0.5, 1.5, 2.0) and cfg.cam_infer.bg_threshold == 0.15
    assert cfg.seg.arch == "deeplabv2" and cfg.seg.iterations == 20000 and cfg.seg.crop_size == 321
    assert cfg.context.grid == 64 and cfg.context.prior == "freq" and cfg.rounds == 3
    assert cfg.pseudo.refine == "irn"


def test_overrides_parse_types():
    cfg = apply_overrides(preset("smoke"), ["cam.epochs=7", "cam.amp=false", "seed=4",
                                            "cam_infer.scales=1.0,0.5", "cam.lr=1e-2",
                                            "cam.resize_long=30,40"])
    assert cfg.cam.epochs == 7 and cfg.cam.amp is False and cfg.seed == 4
    assert cfg.cam_infer.scales == (1.0, 0.5) and cfg.cam.lr == 0.01
    assert cfg.cam.resize_long == (30, 40)


def test_tuple_overrides_accept_brackets():
    """A list typed as Python or JSON writes it reads as the tuple it means."""
    for text in ("[1.0,0.5]", "(1.0, 0.5)", "[1.0, 0.5]"):
        assert apply_overrides(preset("smoke"), [f"cam_infer.scales={text}"]).cam_infer.scales == (1.0, 0.5)


@pytest.mark.parametrize("override, fragment", [
    ("cam.epochz=3", "cam.epochz"),
    ("nope=1", "nope"),
    ("cam.epochs=three", "cam.epochs"),
    ("cam.amp=maybe", "cam.amp"),
    ("cam=3", "section"),
    ("seed", "key=value"),
])
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as info:
        apply_overrides(preset("cpu"), [override])
    assert fragment in str(info.value)


def test_unknown_preset_and_unknown_json_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        preset("fast")
    data = preset("smoke").to_dict()
    data["cam"]["bogus"] = 1
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="cam.bogus"):
        ExperimentConfig.load(tmp_path / "c.json")


def test_resolve_top_level_keywords():
    cfg = resolve("smoke", ["data.root=/x"], seed=3, rounds=None)
    assert cfg.seed == 3 and cfg.rounds == preset("smoke").rounds and cfg.data.root == "/x"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_pass_the_range_checks(name):
    from causal_wsss.config import check_config

    assert check_config(preset(name)) == preset(name)


@pytest.mark.parametrize("override, fragment", [
    ("rounds=-1", "'rounds' is -1; expected an integer >= 0"),
    ("seed=-3", "'seed' is -3"),
    ("device=gpu", "'device' is 'gpu'"),
    ("cam.epochs=0", "'cam.epochs' is 0; expected an integer >= 1"),
    ("cam.batch_size=0", "'cam.batch_size' is 0"),
    ("cam.lr=0", "'cam.lr' is 0.0; expected a number > 0"),
    ("cam.lr=nan", "'cam.lr' is nan"),
    ("cam.resize_long=80,40", "'cam.resize_long' is (80, 40)"),
    ("cam.optimizer=adam", "'cam.optimizer' is 'adam'; expected one of: sgd, adamw"),
    ("cam_infer.scales=", "'cam_infer.scales' is ()"),
    ("cam_infer.scales=1.0,-0.5", "'cam_infer.scales' is (1.0, -0.5)"),
    ("cam_infer.bg_threshold=1.5", "'cam_infer.bg_threshold' is 1.5; expected a number in [0, 1]"),
    ("cam_infer.sweep=0.6,0.1,0.01", "'cam_infer.sweep'"),
    ("data.num_workers=-1", "'data.num_workers' is -1"),
    ("data.val_split=", "'data.val_split' is ''"),
    ("pseudo.refine=sharpen", "'pseudo.refine' is 'sharpen'"),
    ("pseudo.irn_radius=1", "'pseudo.irn_radius' is 1; expected an integer >= 2"),
    ("pseudo.conf_bg_threshold=0.5", "'pseudo.conf_bg_threshold' is 0.5; expected at most"),
    ("seg.iterations=0", "'seg.iterations' is 0"),
    ("seg.momentum=1.0", "'seg.momentum' is 1.0"),
    ("context.grid=0", "'context.grid' is 0"),
    ("context.prior=zipf", "'context.prior' is 'zipf'"),
])
def test_out_of_range_values_are_refused_when_resolved(override, fragment):
    with pytest.raises(ConfigError) as info:
        resolve("smoke", [override])
    assert fragment in str(info.value)


def test_config_differences_name_every_key_with_both_values():
    from causal_wsss.config import config_differences, describe_differences

    old = resolve("smoke", ["data.root=/a"], rounds=1)
    new = resolve("smoke", ["data.root=/b", "cam.lr=0.01"], rounds=3)
    diffs = config_differences(old, new)
    assert diffs == [("data.root", "/a", "/b"), ("cam.lr", 0.003, 0.01)]  # rounds may differ
    assert describe_differences(diffs) == ("data.root is '/a' there, '/b' now; cam.lr is 0.003 "
                                           "there, 0.01 now")
    assert config_differences(old, old) == []


def test_cam_inference_precision_key():
    from causal_wsss.config import cam_infer_amp

    cfg = preset("smoke")
    assert cfg.cam_infer.amp == "same" and cam_infer_amp(cfg) == cfg.cam.amp
    off = apply_overrides(cfg, ["cam.amp=true", "cam_infer.amp=false"])
    assert cam_infer_amp(off) is False and off.cam.amp is True  # IRNet's CAMs, bf16 training
    on = apply_overrides(cfg, ["cam.amp=false", "cam_infer.amp=true"])
    assert cam_infer_amp(on) is True
    with pytest.raises(ConfigError, match="cam_infer.amp"):
        check_config(apply_overrides(cfg, ["cam_infer.amp=maybe"]))


def test_working_size_key():
    assert preset("cpu").cam_infer.work_long == 280
    for name in ("gpu", "paper", "smoke", "cpu_scratch"):
        assert preset(name).cam_infer.work_long == 0, name  # IRNet: the source size
    assert apply_overrides(preset("cpu"), ["cam_infer.work_long=0"]).cam_infer.work_long == 0
    with pytest.raises(ConfigError, match="cam_infer.work_long"):
        check_config(apply_overrides(preset("cpu"), ["cam_infer.work_long=-1"]))
