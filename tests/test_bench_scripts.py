"""bench/downsample_voc.py and bench/bench_compile_train.py: what they write and what they refuse
(no time is asserted; compiling is not run here, it takes minutes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from causal_wsss.data.registry import build_dataset
from causal_wsss.data.synthetic import generate_synthetic

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


downsample_voc = _load("downsample_voc")
bench_compile_train = _load("bench_compile_train")


def test_downsample_voc_rescales_images_and_masks(tmp_path, capsys):
    voc = generate_synthetic(tmp_path / "big", n_train=6, n_val=2, size=96)
    assert downsample_voc.main([str(tmp_path / "big"), str(tmp_path / "small"), "--long", "48"]) == 0
    assert "8 images rescaled to a long side of 48 px" in capsys.readouterr().out
    small = tmp_path / "small" / voc.relative_to(tmp_path / "big")
    for path in sorted((voc / "JPEGImages").iterdir()):
        with Image.open(path) as big_image, Image.open(small / "JPEGImages" / path.name) as image:
            assert max(image.size) == 48
            assert image.size == downsample_voc.rescaled(big_image.size, 48)
        stem = path.stem + ".png"
        with Image.open(voc / "SegmentationClass" / stem) as big_mask, \
                Image.open(small / "SegmentationClass" / stem) as mask:
            assert mask.mode == "P" and max(mask.size) == 48
            # nearest neighbour: no label that the full-size mask does not have
            assert set(np.unique(np.asarray(mask))) <= set(np.unique(np.asarray(big_mask)))
    # the lists and the sidecar are copied: the copy loads as the same data set
    big_ds = build_dataset("voc", tmp_path / "big", "train", None)
    small_ds = build_dataset("voc", tmp_path / "small", "train", None)
    assert small_ds.names == big_ds.names
    assert (small_ds.label_matrix() == big_ds.label_matrix()).all()
    assert not (tmp_path / "small.partial").exists()


def test_downsample_voc_refuses_in_one_line(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    generate_synthetic(tmp_path / "big", n_train=2, n_val=1, size=64)
    assert downsample_voc.main([str(tmp_path / "big"), str(tmp_path / "taken")]) == 2
    assert "taken exists" in capsys.readouterr().err
    assert downsample_voc.main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        downsample_voc.main([str(tmp_path / "big"), str(tmp_path / "out"), "--long", "0"])


def test_bench_compile_train_problems_match_the_preset():
    from causal_wsss.config import apply_overrides, resolve

    cfg = apply_overrides(resolve("cpu"), ["cam.weights=none", "seg.weights=none",
                                           "cam.batch_size=2", "cam.crop_size=64",
                                           "seg.batch_size=2", "seg.crop_size=64"])
    for name in ("cam", "seg"):
        net, loss_fn = bench_compile_train.training_problem(cfg, name)
        params = [p for p in net.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in params]
        times = bench_compile_train.step_times(params, net, loss_fn, 2)
        assert len(times) == 2 and all(t > 0 for t in times)
        assert any(not (a == p.detach()).all() for a, p in zip(before, params))  # it trained
        first, second = bench_compile_train.paired_steps(params, net, net, loss_fn, 2)
        assert len(first) == len(second) == 2
    with pytest.raises(SystemExit):
        bench_compile_train.main(["--steps", "1"])
