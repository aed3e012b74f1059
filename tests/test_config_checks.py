"""Values that passed the range checks and failed later (the hostile pass): each is refused up
front, in one line naming the key or option, and its boundary value still works."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from causal_wsss.cli import build_parser, main
from causal_wsss.config import (
    MIN_CROP_CELLS,
    SEED_MAX,
    SEG_OUTPUT_STRIDES,
    SWEEP_MAX_POINTS,
    preset,
    resolve,
    sweep_points,
)
from causal_wsss.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from causal_wsss.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root, n_train=8, n_val=4, seed=0, size=64)
    return root


def refused(overrides: str, *fragments: str, **top) -> str:
    """The ConfigError of the smoke preset with ``overrides`` (space-separated) and ``top``."""
    with pytest.raises(ConfigError) as info:
        resolve("smoke", overrides.split(), **top)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    return str(info.value)


def one_error_line(capsys, argv: list[str], *fragments: str) -> str:
    """Run the command line in-process: exit status 2 and one error line, no traceback."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err[-3000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- 1. seeds --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2**64, 2**64 - 1, 2**63])
def test_seed_beyond_int64_is_refused(seed):
    refused("", "'seed'", str(seed), "2^63 - 1", seed=seed)


def test_seed_flag_beyond_int64_is_one_line(capsys, data, tmp_path):
    one_error_line(capsys, ["run", "--root", str(data), "--preset", "smoke", "--rounds", "0",
                            "--out", str(tmp_path / "run"), "--no-progress",
                            "--seed", str(2**64)], "'seed'", str(2**64))
    assert not (tmp_path / "run").exists()


def test_bad_cpu_amp_variable_is_one_line_before_writing(capsys, data, tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSAL_WSSS_CPU_AMP", "bf16")
    one_error_line(capsys, ["run", "--root", str(data), "--preset", "smoke", "--rounds", "0",
                            "--out", str(tmp_path / "run"), "--no-progress"],
                   "CAUSAL_WSSS_CPU_AMP", "'bf16'")
    assert not (tmp_path / "run").exists()


def test_largest_seed_seeds_every_consumer():
    """SEED_MAX goes through everything a run seeds: the global generators, the stage seeds,
    the samplers' generators at any epoch, the augmentation generators."""
    from causal_wsss.data.transforms import sample_generator
    from causal_wsss.runtime import seed_everything, stage_seed
    from causal_wsss.train import make_loader

    assert resolve("smoke", seed=SEED_MAX).seed == SEED_MAX
    seed_everything(SEED_MAX)
    seed_everything(stage_seed(SEED_MAX, "cam"))
    loader = make_loader(list(range(10)), batch_size=4, seed=SEED_MAX)
    for epoch in (0, 1, 1000):  # the sampler seeds its generator with seed + epoch
        loader.sampler.set_epoch(epoch)
        assert sorted(iter(loader.sampler)) == list(range(10))
    sample_generator(SEED_MAX, 3, 7)


# --- 2. the threshold sweep ------------------------------------------------------------------


@pytest.mark.parametrize("sweep", ["0,1,1e-9", "0,1,0.0005", "0,0.5,1e-7", "0.5,0.5,1e-300"])
def test_sweeps_of_too_many_thresholds_are_refused(sweep):
    # step <= 0, start > stop and values outside [0, 1] were refused already (test_config.py)
    refused(f"cam_infer.sweep={sweep}", "'cam_infer.sweep'",
            f"at most {SWEEP_MAX_POINTS} thresholds")


@pytest.mark.parametrize("sweep", [(0.05, 0.60, 0.01), (0.05, 0.95, 0.01), (0.0, 0.999, 0.001),
                                   (0.3, 0.3, 0.01), (0.0, 1.0, 0.3), (0.1, 0.2, 1.0),
                                   (0.0, 0.001, 1e-6)])
def test_sweep_points_counts_the_grid(sweep):
    from causal_wsss.metrics import threshold_grid

    assert sweep_points(*sweep) == len(threshold_grid(*sweep))
    if sweep_points(*sweep) <= SWEEP_MAX_POINTS:
        resolve("smoke", ["cam_infer.sweep=" + ",".join(map(repr, sweep))])


# --- 3. crop sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize("override, smallest", [
    ("cam.crop_size=1", 32), ("cam.crop_size=8", 32), ("cam.crop_size=31", 32),
    ("cam.output_stride=8 cam.crop_size=15", 16),
])
def test_cam_crop_below_two_feature_cells_is_refused(override, smallest):
    refused(override, f"'cam.crop_size' is {override.split('=')[-1]}; expected at least "
                      f"{smallest}")
    resolve("smoke", [*override.split()[:-1], f"cam.crop_size={smallest}"])


def test_cam_crop_of_one_cell_is_one_line(capsys, data, tmp_path):
    """Before: a crop of one feature cell trained on 1x1 maps, and with a batch of one image
    batch normalisation stopped the run with a traceback (ValueError: Expected more than 1
    value per channel when training) after it had started writing."""
    one_error_line(capsys, ["run", "--root", str(data), "--preset", "smoke", "--rounds", "0",
                            "--out", str(tmp_path / "run"), "--no-progress", "cam.crop_size=16",
                            "cam.batch_size=1", "seg.iterations=2"],
                   "'cam.crop_size' is 16", "cam.output_stride 16")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arch, backbone, crop", [
    ("tiny", "tiny", 7), ("tiny", "resnet18", 15), ("tiny", "mobilenet_v2", 31),
    ("deeplabv2", "resnet101", 15),
])
def test_seg_crop_below_two_output_cells_is_refused(arch, backbone, crop):
    overrides = f"seg.arch={arch} seg.backbone={backbone} seg.weights=none"
    refused(f"{overrides} seg.crop_size={crop}",
            f"'seg.crop_size' is {crop}; expected at least {crop + 1}")
    resolve("smoke", [*overrides.split(), f"seg.crop_size={crop + 1}"])


def test_seg_output_strides_match_the_networks():
    from causal_wsss.models.seg_net import _BACKBONES, build_seg_net

    pairs = {(a, b) for a, backbones in _BACKBONES.items() for b in backbones}
    assert set(SEG_OUTPUT_STRIDES) == pairs
    for (arch, backbone), stride in SEG_OUTPUT_STRIDES.items():
        with torch.device("meta"):
            net = build_seg_net(21, arch=arch, backbone=backbone, weights="none")
        assert net.output_stride == stride, (arch, backbone)


def test_seg_crop_of_one_cell_failed_in_training():
    """What the seg rule prevents: the tiny network on a crop of one output cell, a batch of
    one, fails in batch normalisation; two cells per side train."""
    from causal_wsss.models.seg_net import build_seg_net

    net = build_seg_net(21, arch="tiny", backbone="tiny", weights="none").train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        net(torch.zeros(1, 3, 4, 4))
    net(torch.zeros(1, 3, MIN_CROP_CELLS * 4, MIN_CROP_CELLS * 4))


def test_presets_keep_their_crops():
    for name in ("smoke", "cpu", "cpu_scratch", "gpu", "paper"):
        cfg = preset(name)
        assert cfg.cam.crop_size >= MIN_CROP_CELLS * cfg.cam.output_stride
        assert resolve(name) == cfg


# --- IRN's radius and walk, the confounder grid ----------------------------------------------


def test_irn_radius_beyond_the_crop_grid_is_refused():
    # smoke: cam.crop_size 64, a stride-4 grid of 16 cells
    refused("pseudo.refine=irn pseudo.irn_radius=17",
            "'pseudo.irn_radius' is 17; expected at most 16")
    resolve("smoke", ["pseudo.refine=irn", "pseudo.irn_radius=16"])
    resolve("smoke", ["pseudo.irn_radius=17"])  # not read without IRN


def test_walk_steps_and_confounder_grid_are_bounded():
    refused("pseudo.exp_times=17", "'pseudo.exp_times' is 17; expected an integer in [0, 16]")
    resolve("smoke", ["pseudo.exp_times=16"])
    refused("context.grid=100000", "'context.grid' is 100000; expected an integer in [1, 512]")
    resolve("smoke", ["context.grid=512"])


# --- 4. cam_infer.max_side -------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 500])
def test_max_side_other_than_zero_is_refused(value):
    refused(f"cam_infer.max_side={value}", f"'cam_infer.max_side' is {value}", "not implemented",
            "cam_infer.work_long")


def test_max_side_zero_keeps_the_fingerprint(tmp_path):
    """The key stays (at 0): config.json files and fingerprints of existing folders match."""
    from causal_wsss.config import ExperimentConfig
    from causal_wsss.runfolder import config_fingerprint

    cfg = resolve("cpu", ["data.root=/d"])
    assert cfg.to_dict()["cam_infer"]["max_side"] == 0
    cfg.save(tmp_path / "config.json")
    assert config_fingerprint(ExperimentConfig.load(tmp_path / "config.json")) == \
        config_fingerprint(cfg)


# --- 5. empty output folders -----------------------------------------------------------------


def test_empty_out_is_refused(capsys, data, tmp_path, monkeypatch):
    from causal_wsss.runfolder import check_out_folder

    monkeypatch.chdir(tmp_path)
    for out in ("", "  "):
        with pytest.raises(ConfigError, match="--out is empty"):
            check_out_folder(out)
        one_error_line(capsys, ["run", "--root", str(data), "--preset", "smoke", "--rounds",
                                "0", "--out", out, "--no-progress", "seg.iterations=2"],
                       "--out", "empty")
    assert list(tmp_path.iterdir()) == []  # no config.json, round_0/ or run.lock here


def test_empty_synth_and_demo_folders_are_refused(capsys, tmp_path, monkeypatch):
    from causal_wsss.data.synthetic import generate_synthetic

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="synthetic output folder is empty"):
        generate_synthetic("", n_train=2, n_val=1, size=64)
    one_error_line(capsys, ["synth", "", "--train", "2", "--val", "1", "--size", "64"],
                   "argument out", "empty")
    for option in ("--out", "--data"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["demo", option, ""])
        assert "empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- 8. stats --top --------------------------------------------------------------------------


def test_negative_top_is_refused(capsys, data):
    from causal_wsss.data.stats import format_stats_table

    one_error_line(capsys, ["stats", "--dataset", "voc", "--root", str(data), "--top", "-1"],
                   "--top", "-1", ">= 0")
    with pytest.raises(ConfigError, match="top is -1"):
        format_stats_table({"num_images": 0, "classes": [], "image_counts": {},
                            "cooccurrence": {}}, top=-1)
    assert main(["stats", "--dataset", "voc", "--root", str(data), "--top", "0"]) == 0


# --- tiny rescales ---------------------------------------------------------------------------


def test_rescale_to_one_pixel():
    """cam.resize_long=1,1 or a tiny seg.scales ask for a 1x1 image, on which torch's uint8
    antialiased resize failed an internal assert (a traceback in a DataLoader)."""
    from causal_wsss.data.transforms import SegTrainTransform, TrainTransform, resize_image

    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 30, 40),
                                                               dtype=np.uint8))
    one = resize_image(image, (1, 1))
    assert one.shape == (3, 1, 1) and one.dtype == torch.uint8
    assert torch.allclose(one.float().flatten(), image.float().mean((1, 2)), atol=4)
    sample = {"image": image, "mask": torch.zeros(30, 40, dtype=torch.int64), "index": 0}
    for transform in (TrainTransform(32, resize_long=(1, 1)), SegTrainTransform(8, scales=(1e-9,))):
        out = transform(sample)
        assert out["image"].shape == (3, transform.crop_size, transform.crop_size)


def test_a_scale_that_shrinks_an_image_to_nothing_is_refused_before_training(tmp_path):
    """cam_infer.scales=1e-9 passes the range check (a positive factor) but shrinks every image
    to nothing: refused at the start of the run, naming the key and an image, nothing trained."""
    from causal_wsss.config import resolve
    from causal_wsss.data.synthetic import generate_synthetic
    from causal_wsss.errors import ConfigError
    from causal_wsss.pipeline import run_experiment

    root = tmp_path / "synth"
    generate_synthetic(root, n_train=4, n_val=2, rho=0.9, seed=0, size=64, twins=0)
    cfg = resolve("smoke", [f"data.root={root}", "cam_infer.scales=1.0,1e-9"], rounds=0)
    with pytest.raises(ConfigError, match="cam_infer.scales.*shrinks"):
        run_experiment(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "round_0").exists()
