"""The pipeline end to end in the smoke preset: two rounds, resuming, clear errors, DDP with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from causal_wsss.config import resolve
from causal_wsss.data.synthetic import generate_synthetic
from causal_wsss.pipeline import run_experiment
from causal_wsss.report import format_report_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(out, n_train=24, n_val=8, rho=0.9, seed=0, size=96, twins=2)
    return out


def _cfg(root, *extra, rounds=1):
    return resolve("smoke", [f"data.root={root}", *extra], seed=0, rounds=rounds)


def test_two_smoke_rounds_end_to_end_and_resume(synth, tmp_path):
    out = tmp_path / "run"
    report = run_experiment(_cfg(synth), out, progress=False)
    assert [e["round"] for e in report["rounds"]] == [0, 1]
    for entry in report["rounds"]:
        for key in ("cam_miou", "cam_threshold", "cam_miou_best", "pseudo_miou", "seg_miou",
                    "leakage", "leakage_cooccur", "leakage_background"):
            assert key in entry
        assert 0 <= entry["cam_miou"] <= entry["cam_miou_best"] <= 100
        assert entry["leakage"] == pytest.approx(entry["leakage_cooccur"]
                                                 + entry["leakage_background"], abs=1e-6)
    for entry in report["rounds"]:  # section 4's figures and, with twins, the do(context) ones
        assert entry["miou_classes"] == ["background", "aeroplane", "bird", "boat", "car",
                                         "horse", "person"]
        for key in ("leakage_uniform", "contrast_context", "contrast_partner", "precision",
                    "precision_fp_context", "precision_best", "context_effect",
                    "fp_rate_preferred", "fp_rate_other", "cam_miou_in_context",
                    "cam_miou_out_of_context"):
            assert key in entry, key
        assert 0 < entry["leakage_uniform"] < 1
    twin_eval = json.loads((out / "round_1" / "twin_eval.json").read_text())
    assert set(twin_eval["per_class"]) <= {"aeroplane", "bird", "boat", "car", "horse", "person"}
    assert "context_weight_mean_abs" in report["rounds"][1]
    r1 = report["rounds"][1]
    assert 0 < r1["alpha_max_mean"] <= 1 and 0 < r1["alpha_top_class_share"] <= 1
    assert r1["m_spread"] >= 0
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert (out / "config.json").is_file() and (out / "log.txt").is_file()
    assert (out / "round_1" / "confounders" / "dictionary.npy").is_file()
    assert len(list((out / "round_0" / "cams").glob("*.npz"))) == 24
    # the twins get predictions too: round 1's context maps for them come from these
    n_twins = len((synth / "VOCdevkit/VOC2012/ImageSets/Segmentation/twins.txt").read_text().split())
    assert n_twins > 10
    assert len(list((out / "round_0" / "pred").glob("*.png"))) == 24 + n_twins
    table = format_report_table(report)
    assert "round" in table and len(table.splitlines()) == 5
    # a rerun finds every stage finished and trains nothing
    stamp = (out / "round_1" / "cam_net.pt").stat().st_mtime_ns
    again = run_experiment(_cfg(synth), out, progress=False)
    assert again == report
    assert (out / "round_1" / "cam_net.pt").stat().st_mtime_ns == stamp
    # the same data folder named relatively (as notebooks do) is the same configuration
    relative = os.path.relpath(synth, Path.cwd())
    assert run_experiment(_cfg(relative), out, progress=False) == report
    # a different configuration in the same folder is refused
    from causal_wsss.errors import ConfigError

    with pytest.raises(ConfigError, match="different configuration"):
        run_experiment(_cfg(synth, "cam.epochs=5"), out, progress=False)


def test_interrupted_cam_training_resumes_to_the_same_weights(synth, tmp_path, monkeypatch):
    import causal_wsss.stages.cam_train as cam_train_mod
    from causal_wsss.runtime import DistInfo, seed_everything, setup_logging
    from causal_wsss.stages.cam_train import stage_cam_train
    from causal_wsss.stages.datasets import load_datasets
    from causal_wsss.stages.models import build_cam_model

    cfg = _cfg(synth, "cam.epochs=3", rounds=0)
    sets = load_datasets(cfg)
    logger = setup_logging(None)

    def train(folder):
        model = build_cam_model(cfg, 20)
        stage_cam_train(cfg, model, sets["train"], folder, device=torch.device("cpu"),
                        dist_info=DistInfo(), progress=False, logger=logger)
        return model.state_dict()

    class KillAfterFirstEpoch:
        """Stands in for the epoch logger; 'kills' the run once epoch 1 is checkpointed."""

        def __init__(self, *args, **kwargs):
            pass

        def on_epoch_end(self, state):
            raise KeyboardInterrupt

    seed_everything(0)
    full = train(tmp_path / "a")
    seed_everything(0)
    with monkeypatch.context() as patch:
        patch.setattr(cam_train_mod, "LogEpochs", KillAfterFirstEpoch)
        with pytest.raises(KeyboardInterrupt):
            train(tmp_path / "b")
    seed_everything(123)  # a new process does not share the old random state
    resumed = train(tmp_path / "b")
    for key in full:
        torch.testing.assert_close(full[key], resumed[key], rtol=0, atol=0, msg=key)


def test_cam_training_alone_trains_the_network_of_a_whole_round(synth, tmp_path):
    """train_cam_network (the evidence protocol's interventional training) stops after the CAM
    training, with the very weights a whole round 0 trains, and a later run resumes from it."""
    from causal_wsss.errors import ConfigError
    from causal_wsss.pipeline import train_cam_network

    cfg = _cfg(synth, rounds=0)
    whole = run_experiment(cfg, tmp_path / "whole", progress=False)
    path = train_cam_network(cfg, tmp_path / "alone", progress=False)
    assert path == (tmp_path / "alone" / "round_0" / "cam_net.pt").resolve()
    assert sorted(p.name for p in path.parent.glob("*.json")) == ["cam_train.json"]
    assert not (tmp_path / "alone" / "report.json").exists()  # no round is finished
    ours = torch.load(path, map_location="cpu", weights_only=False)
    theirs = torch.load(tmp_path / "whole" / "round_0" / "cam_net.pt", map_location="cpu",
                        weights_only=False)
    for key in theirs["model"]:
        torch.testing.assert_close(ours["model"][key], theirs["model"][key], rtol=0, atol=0,
                                   msg=key)
    stamp = path.stat().st_mtime_ns
    assert train_cam_network(cfg, tmp_path / "alone", progress=False) == path  # done: no work
    assert path.stat().st_mtime_ns == stamp
    # the same folder then runs the rest of the round on that network, to the same figures
    assert run_experiment(cfg, tmp_path / "alone", progress=False)["rounds"] == whole["rounds"]
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="nothing to train"):
        train_cam_network(_cfg(synth, f"cam.checkpoint={path}", rounds=0), tmp_path / "c",
                          progress=False)
    with pytest.raises(ConfigError, match="cam.method=irn only"):
        train_cam_network(_cfg(synth, "cam.method=esol", rounds=0), tmp_path / "c",
                          progress=False)
    assert not (tmp_path / "c").exists()


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "causal_wsss", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=ROOT)


def test_run_bad_inputs_give_one_clear_line(synth, tmp_path):
    res = _cli("run", "--root", str(tmp_path / "missing"), "--preset", "smoke", "--out",
               str(tmp_path / "o1"), "--no-progress")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert str(tmp_path / "missing") in res.stderr
    res = _cli("run", "--root", str(synth), "--preset", "smoke", "--out", str(tmp_path / "o2"),
               "cam.nope=1")
    assert res.returncode == 2 and "cam.nope" in res.stderr and "Traceback" not in res.stderr
    res = _cli("run", "--dataset", "pascal", "--root", str(synth), "--preset", "smoke", "--out",
               str(tmp_path / "o3"))
    assert res.returncode == 2 and "pascal" in res.stderr and "Traceback" not in res.stderr
    # a corrupt image is named in the message
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(synth, broken)
    image_dir = broken / "VOCdevkit" / "VOC2012" / "JPEGImages"
    victim = sorted(image_dir.glob("*.jpg"))[3]
    victim.write_bytes(victim.read_bytes()[:200])
    res = _cli("run", "--root", str(broken), "--preset", "smoke", "--rounds", "0", "--out",
               str(tmp_path / "o4"), "--no-progress")
    assert res.returncode == 2, res.stderr[-2000:]
    assert victim.name in res.stderr and "Traceback" not in res.stderr


DDP_SCRIPT = r"""
import sys, torch
from causal_wsss.cam import make_cams
from causal_wsss.data import build_dataset
from causal_wsss.models import build_cam_net
from causal_wsss.runtime import barrier, init_distributed
info, device = init_distributed("cpu")
torch.manual_seed(0)
net = build_cam_net(20, backbone="tiny", weights="none", freeze_bn=False, freeze_stem=False)
ds = build_dataset("voc", sys.argv[1], "train")
make_cams(net, ds, sys.argv[2], batch_size=4, scales=(1.0, 0.5), device=device, amp=False,
          progress=False, rank=info.rank, world_size=info.world_size)
barrier()
"""


def test_two_gloo_processes_give_the_same_cams_as_one(synth, tmp_path):
    from causal_wsss.cam import CamCache

    script = tmp_path / "cams.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), str(synth), str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", str(script), str(synth), str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = CamCache(tmp_path / "one"), CamCache(tmp_path / "two")
    names = sorted(p.stem for p in (tmp_path / "one").glob("*.npz"))
    assert len(names) == 24 and sorted(p.stem for p in (tmp_path / "two").glob("*.npz")) == names
    for name in names:
        x, y = a.get(name), b.get(name)
        assert torch.equal(x.keys, y.keys)
        torch.testing.assert_close(x.high_res, y.high_res, rtol=0, atol=0)


def test_smoke_pipeline_under_torchrun(synth, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "causal_wsss", "run", "--root", str(synth),
                          "--preset", "smoke", "--rounds", "1", "--out", str(out),
                          "--no-progress"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert [e["round"] for e in report["rounds"]] == [0, 1]
    assert len(list((out / "round_0" / "cams").glob("*.npz"))) == 24


def test_irn_refinement_stage_in_the_smoke_pipeline(synth, tmp_path):
    out = tmp_path / "irn"
    cfg = _cfg(synth, "pseudo.refine=irn", rounds=0)
    report = run_experiment(cfg, out, progress=False)
    round_dir = out / "round_0"
    for stage in ("ir_labels", "irn_train", "pseudo"):
        assert (round_dir / f"{stage}.json").is_file()
    assert (round_dir / "irn.pt").is_file()
    assert len(list((round_dir / "ir_label").glob("*.png"))) == 24
    assert 0 < report["rounds"][0]["pseudo_miou"] <= 100
    stamp = (round_dir / "irn.pt").stat().st_mtime_ns
    assert run_experiment(cfg, out, progress=False) == report
    assert (round_dir / "irn.pt").stat().st_mtime_ns == stamp


def test_every_round_starts_from_the_same_trunk(synth):
    """Round t's CAM network starts where round 0's did; only the context channel differs."""
    from causal_wsss.runtime import seed_everything, stage_seed
    from causal_wsss.stages.models import build_cam_model

    cfg = _cfg(synth)
    assert stage_seed(0, "cam") == stage_seed(0, "cam") != stage_seed(1, "cam")
    assert stage_seed(0, "cam") != stage_seed(0, "seg")
    seed_everything(stage_seed(cfg.seed, "cam"))
    base = build_cam_model(cfg, 20)
    torch.rand(7)  # whatever earlier stages consumed does not matter
    seed_everything(stage_seed(cfg.seed, "cam"))
    conta = build_cam_model(cfg, 20, with_context=True)
    c = base.classifier.weight.shape[1]
    assert conta.classifier.weight.shape[1] == c + 1
    assert torch.equal(conta.classifier.weight[:, :c], base.classifier.weight)
    assert torch.count_nonzero(conta.classifier.weight[:, c:]) == 0  # the M column starts at 0
    for (name, a), b in zip(base.backbone.state_dict().items(),
                            conta.backbone.state_dict().values()):
        assert torch.equal(a, b), name


def test_missing_crf_package_is_reported_before_training(synth, tmp_path, monkeypatch):
    """The paper preset's IR labels use the dense CRF: without it the run stops at once."""
    from causal_wsss.errors import ConfigError

    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # import pydensecrf -> ImportError
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ConfigError, match="pseudo.ir_crf=true.*causal-wsss\\[crf\\]"):
        run_experiment(_cfg(synth, "pseudo.refine=irn", "pseudo.ir_crf=true"), tmp_path / "r",
                       progress=False)
    assert not (tmp_path / "r" / "round_0").exists()
    with pytest.raises(ConfigError, match="pseudo.refine"):
        run_experiment(_cfg(synth, "pseudo.refine=sharpen"), tmp_path / "r2", progress=False)


def test_ground_truth_confounder_source_uses_the_masks(synth, tmp_path):
    """context.source=gt (the paper's upper-bound ablation) builds C from the true masks."""
    import numpy as np

    from causal_wsss.confounders import ConfounderDictionary, ground_truth_grids, resize_labels
    from causal_wsss.stages.datasets import load_datasets

    cfg = _cfg(synth, "context.source=gt")
    report = run_experiment(cfg, tmp_path / "gt", progress=False)
    assert [e["round"] for e in report["rounds"]] == [0, 1]
    train = load_datasets(cfg)["train"]
    queries = np.load(tmp_path / "gt" / "round_1" / "confounders" / "queries.npy")
    np.testing.assert_array_equal(queries[0], resize_labels(train.load_mask(0), cfg.context.grid))
    dictionary = ConfounderDictionary.load(tmp_path / "gt" / "round_1" / "confounders")
    assert dictionary.valid.sum() == len({c for row in train.label_matrix() for c in np.flatnonzero(row)})
    from causal_wsss.errors import DataError

    with pytest.raises(DataError, match="none of the data sets"):
        ground_truth_grids([train], ["no_such_image"], 8)


def test_empty_confounder_dictionary_is_one_clear_message(tmp_path):
    """A previous round whose segmentation predicts background everywhere leaves Eq. 3 nothing
    to attend to: the confounders stage says so and names the prediction folder."""
    import numpy as np
    from PIL import Image

    from causal_wsss.errors import DataError
    from causal_wsss.stages.confounders import stage_confounders

    prev = tmp_path / "round_0"
    (prev / "pred").mkdir(parents=True)
    names = ["a", "b"]
    for name in names:
        Image.fromarray(np.zeros((20, 30), np.uint8)).save(prev / "pred" / f"{name}.png")
    cfg = resolve("smoke")
    labels = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    with pytest.raises(DataError, match=r"confounder dictionary is empty.*round_0.pred.*seg\.iterations"):
        stage_confounders(cfg, prev, tmp_path / "round_1", names, labels,
                          classes=("background", "x", "y", "z"), progress=False)


def test_torchrun_with_one_process_still_forms_a_process_group(tmp_path):
    """`torchrun --nproc_per_node 1` takes the DDP path (gloo here, NCCL on a GPU)."""
    code = (
        "import torch.distributed as dist\n"
        "from causal_wsss.runtime import init_distributed\n"
        "info, device = init_distributed('cpu')\n"
        "assert info.group and info.distributed and info.world_size == 1, info\n"
        "print(dist.get_backend())\n"
        "dist.destroy_process_group()\n")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29611", "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "gloo"
