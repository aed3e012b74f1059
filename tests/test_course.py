"""causal_wsss.course (the notebooks' shared cells), the notebook logging, and the layering:
the pipeline never imports the plotting; the demo's figures belong to the command line."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_wsss import course
from causal_wsss.cam import CamCache, ImageCams
from causal_wsss.data import build_dataset
from causal_wsss.pseudo_masks import refine_none

PACKAGE = Path(course.__file__).resolve().parent


def test_benchmark_config_writes_the_data_and_an_absolute_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = course.benchmark_config("smoke", synth_dir="synth", rho=0.9, seed=3, n_train=6,
                                  n_val=2, size=64, twins=0, rounds=1,
                                  overrides=["seg.iterations=2"])
    assert Path(cfg.data.root) == (tmp_path / "synth").resolve() and Path(cfg.data.root).is_absolute()
    assert (cfg.data.dataset, cfg.seed, cfg.rounds, cfg.seg.iterations) == ("synthetic", 3, 1, 2)
    assert len(build_dataset("synthetic", cfg.data.root, "train")) == 6
    other = course.benchmark_config("smoke", synth_dir="unused", rho=0.9, seed=0, n_train=6,
                                    n_val=2, size=64, twins=0, dataset="voc", data="synth")
    assert other.data.dataset == "voc" and other.data.root == cfg.data.root
    assert not (tmp_path / "unused").exists()


def test_training_steps_follow_the_epochs_the_step_budget_and_the_iterations():
    """CAM steps grow with the data set; IRNet's boundary network too under a fixed number of
    epochs (paper), but stays near its step budget (cpu: irn_steps); segmentation never moves."""
    from causal_wsss.config import resolve

    paper = resolve("paper")
    small, large = course.training_steps(paper, 1464), course.training_steps(paper, 2 * 1464)
    assert small["CAM network"] == paper.cam.epochs * (1464 // paper.cam.batch_size)
    assert large["CAM network"] == pytest.approx(2 * small["CAM network"], abs=paper.cam.epochs)
    assert small["segmentation"] == large["segmentation"] == paper.seg.iterations
    cpu = resolve("cpu")
    steps = [course.training_steps(cpu, n)["boundary network"] for n in (400, 800)]
    assert all(cpu.pseudo.irn_steps <= s < cpu.pseudo.irn_steps + 800 // cpu.pseudo.irn_batch_size
               for s in steps)
    assert course.training_steps(cpu, 3)["CAM network"] == cpu.cam.epochs  # one short batch


def test_forward_seconds_times_each_side_once_warmed_up():
    calls = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[-1])
            return x.mean()

    seconds = course.forward_seconds(Recorder(), (8, 16), repeats=2)
    assert list(seconds) == [8, 16] and all(s >= 0 for s in seconds.values())
    assert calls == [8, 8, 8, 16, 16, 16]  # a warm-up, then the timed passes


def test_upsample_unit_scales_to_one():
    up = course.upsample_unit(torch.tensor([[0.0, 2.0], [1.0, 0.5]]), (6, 6))
    assert up.shape == (6, 6) and up.max() == pytest.approx(1.0) and up.min() >= 0
    assert course.upsample_unit(torch.zeros(2, 2), (4, 4)).max() == 0


def test_score_pseudo_masks_on_ground_truth_cams(tmp_path):
    from causal_wsss.data.synthetic import generate_synthetic

    generate_synthetic(tmp_path / "synth", n_train=4, n_val=2, rho=0.9, seed=0, size=64)
    ds = build_dataset("synthetic", tmp_path / "synth", "train")
    cache = CamCache(tmp_path / "cams")
    labels = ds.label_matrix()
    for i, name in enumerate(ds.names):
        mask = torch.from_numpy(ds.load_mask(i).astype(np.int64))
        keys = torch.from_numpy(np.flatnonzero(labels[i]))
        cache.put(name, ImageCams(keys, torch.stack([(mask == k + 1).float() for k in keys])))
    table = course.score_pseudo_masks(ds, cache, {"t=0.5": (refine_none, 0.5)},
                                      ir_fg_threshold=0.3, ir_bg_threshold=0.05)
    assert list(table.index) == ["t=0.5", "IR labels"]
    assert table.loc["t=0.5", "mIoU (%)"] == pytest.approx(100.0)
    assert table.loc["t=0.5", "pixels labelled (%)"] == 100.0
    assert 0 < table.loc["IR labels", "pixels labelled (%)"] <= 100.0
    assert list(course.score_pseudo_masks(ds, cache, {"a": (refine_none, 0.5)}).index) == ["a"]


def test_logging_keeps_info_off_the_notebook_console(tmp_path, monkeypatch):
    from causal_wsss import runtime

    monkeypatch.setattr(runtime, "in_notebook", lambda: True)
    logger = runtime.setup_logging(tmp_path, name="causal_wsss_test_nb")
    console = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]
    assert [h.level for h in console] == [logging.WARNING]
    logger.info("only in the file")
    logger.warning("everywhere")
    for h in logger.handlers:
        h.flush()
    text = (tmp_path / "log.txt").read_text()
    assert "only in the file" in text and "everywhere" in text
    monkeypatch.setattr(runtime, "in_notebook", lambda: False)
    runtime.setup_logging(None, name="causal_wsss_test_nb")
    assert [h.level for h in console] == [logging.INFO]  # the command line shows INFO


def test_in_notebook_is_false_outside_a_kernel():
    from causal_wsss.runtime import in_notebook

    assert in_notebook() is False


def test_pipeline_does_not_import_the_plotting():
    for module in ("pipeline", "train", "cam", "irn", "confounders", "metrics"):
        text = (PACKAGE / f"{module}.py").read_text()
        assert "from .viz" not in text and "import viz" not in text, module
    assert "def run_demo" not in (PACKAGE / "pipeline.py").read_text()
    from causal_wsss.cli import run_demo

    assert callable(run_demo)


def test_notebook_03s_training_is_the_pipelines_round_0(tmp_path):
    """Notebook 03 trains the CAM network itself (initial_cam_model + stage_cam_train) into the
    run folder the later notebooks continue: the same seed must give the very network the
    pipeline's round 0 trains, or the course's round 0 differs from `make demo`'s."""
    import torch

    from causal_wsss.pipeline import run_experiment
    from causal_wsss.stages.cam_train import stage_cam_train
    from causal_wsss.stages.datasets import load_datasets
    from causal_wsss.stages.models import initial_cam_model

    cfg = course.benchmark_config("smoke", synth_dir=tmp_path / "synth", rho=0.9, seed=2,
                                  n_train=8, n_val=2, size=64, twins=0,
                                  overrides=["seg.iterations=2", "cam_infer.scales=1.0"])
    run_experiment(cfg, tmp_path / "pipeline", progress=False)
    train = load_datasets(cfg)["train"]
    model = initial_cam_model(cfg, train.num_classes - 1)
    stage_cam_train(cfg, model, train, tmp_path / "notebook" / "round_0",
                    device=torch.device("cpu"), progress=False)
    ours = torch.load(tmp_path / "notebook" / "round_0" / "cam_net.pt", weights_only=True)
    theirs = torch.load(tmp_path / "pipeline" / "round_0" / "cam_net.pt", weights_only=True)
    state = ours.get("model", ours)
    for key, value in theirs.get("model", theirs).items():
        assert torch.equal(value, state[key]), key


def test_confounding_readings_read_the_matrix_and_the_leakage_table():
    import numpy as np

    from causal_wsss.course import confounding_readings

    rows = ["bird", "horse", "person"]
    cols = ["bird", "horse", "person", "bg: sky", "bg: grass"]
    shares = np.array([[0.1, 0.0, 0.0, 0.7, 0.2],
                       [0.0, 0.3, 0.05, 0.1, 0.55],
                       [0.0, 0.08, 0.5, 0.2, 0.22]])
    leakage = {("bird", "sky"): (0.94, 56), ("bird", "grass"): (0.85, 8),
               ("horse", "grass"): (0.67, 61)}
    lines = confounding_readings(shares, rows, cols, leakage)
    assert lines[0] == ("bird: 10% of its CAM mass on its object, 70% on sky; background "
                        "leakage on sky 0.94 (56 pairs) against 0.85 elsewhere")
    assert lines[1] == "horse: 30% of its CAM mass on its object, 55% on grass"  # no other context
    assert lines[2] == "person's CAM on horses: 8% of its mass; horse's CAM on persons: 5%"
    assert len(lines) == 3  # no boat, no indoor column: left out
