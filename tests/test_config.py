"""Config presets, dotted overrides and their error messages."""

from __future__ import annotations

import json

import pytest

from causal_wsss.config import PRESETS, ExperimentConfig, apply_overrides, preset, resolve
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
