"""A run folder that cannot be wedged (issue 15), driven through the command line as a user would.

Validation before anything is written, recovery from missing or corrupt state, a fingerprint of
the data, a lock on the folder, and one line (exit status 2) instead of a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from causal_wsss.data.synthetic import generate_synthetic

ROOT = Path(__file__).resolve().parents[1]
FAST = ("cam.epochs=1", "seg.iterations=2")  # the smoke preset, shorter still


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "causal_wsss", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "causal_wsss", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def run_args(root: Path, out: Path, *extra: str, rounds: int = 1) -> tuple[str, ...]:
    return ("run", "--root", str(root), "--preset", "smoke", "--rounds", str(rounds), "--out",
            str(out), "--no-progress", *FAST, *extra)


def error_line(res: subprocess.CompletedProcess, *fragments: str) -> str:
    """The one error line of a failed command; asserts exit status 2 and no traceback."""
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, res.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def succeeded(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stderr[-4000:]
    assert "Traceback" not in res.stderr


def report_rounds(out: Path) -> list[int]:
    return [e["round"] for e in json.loads((out / "report.json").read_text())["rounds"]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root, n_train=16, n_val=4, seed=0, size=64)
    return root


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A finished two-round (0 and 1) run folder; tests break copies of it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    succeeded(cli(*run_args(data, out)))
    assert report_rounds(out) == [0, 1]
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def read_only_dir(tmp_path: Path) -> Path:
    """A folder in which nothing can be created (as root, chmod does not stop writes: use /sys)."""
    if os.geteuid() == 0:
        folder = Path("/sys/fs")
    else:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
    try:
        (folder / "probe").mkdir()
    except OSError:
        return folder
    (folder / "probe").rmdir()
    pytest.skip(f"no read-only folder on this machine ({folder} is writable)")


# --------------------------------------------------------------------------------------------
# A wrong first attempt locks the folder


def test_wrong_first_attempt_writes_nothing_and_a_changed_config_is_named(data, run_copy, tmp_path):
    out = tmp_path / "o"
    error_line(cli(*run_args(tmp_path / "WRONG", out)), str(tmp_path / "WRONG"))
    assert not out.exists()
    error_line(cli(*run_args(data, out, "data.val_split=nope")), "nope")
    assert not out.exists()
    # a split without ground-truth masks cannot be scored: refused before training, too
    unmasked = tmp_path / "unmasked"
    shutil.copytree(data, unmasked)
    voc = unmasked / "VOCdevkit" / "VOC2012"
    shutil.copy(voc / "JPEGImages" / "val_000001.jpg", voc / "JPEGImages" / "test_000001.jpg")
    (voc / "ImageSets" / "Segmentation" / "test.txt").write_text("test_000001\n")
    error_line(cli(*run_args(unmasked, out, "data.val_split=test")), "'data.val_split'", "masks")
    assert not out.exists()
    # a folder whose config.json was left by an attempt that finished nothing takes the new one
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"preset": "smoke", "rounds": 0,
                                                 "data": {"root": str(tmp_path / "WRONG")}}))
    succeeded(cli(*run_args(data, out, rounds=0)))
    assert report_rounds(out) == [0]
    assert json.loads((out / "config.json").read_text())["data"]["root"] == str(data)
    # a folder with results and a different configuration: the key, both values, what to do
    line = error_line(cli(*run_args(data, run_copy, "cam.lr=0.01", "seg.crop_size=48")),
                      "cam.lr", "0.003", "0.01", "seg.crop_size", "64", "48", "--out")
    assert "cam.epochs" not in line


# --------------------------------------------------------------------------------------------
# Values are not checked before work starts


@pytest.mark.parametrize("extra, key, value", [
    (("--rounds", "-1"), "rounds", "-1"),
    (("cam.epochs=0",), "cam.epochs", "0"),
    (("cam.epochs=-1",), "cam.epochs", "-1"),
    (("cam_infer.scales=",), "cam_infer.scales", "()"),
    (("cam.batch_size=0",), "cam.batch_size", "0"),
    (("seg.iterations=0",), "seg.iterations", "0"),
])
def test_config_values_are_checked_before_any_work(data, tmp_path, extra, key, value):
    out = tmp_path / "o"
    line = error_line(cli(*run_args(data, out), *extra), f"'{key}'", value)
    assert "expected" in line
    assert not out.exists()


def test_config_command_checks_the_values_too():
    error_line(cli("config", "--preset", "smoke", "cam.epochs=0"), "'cam.epochs'", "0")
    succeeded(cli("config", "--preset", "smoke", "rounds=0"))


# --------------------------------------------------------------------------------------------
# Recovery advice that leads nowhere


def test_missing_or_unreadable_checkpoints_are_redone(run_copy, data):
    ckpt = run_copy / "round_1" / "cam_net.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    res = cli(*run_args(data, run_copy))
    succeeded(res)
    assert str(ckpt) in res.stderr and "redo" in res.stderr
    assert report_rounds(run_copy) == [0, 1]
    import torch

    torch.load(ckpt, weights_only=True)  # complete again
    (run_copy / "round_1" / "seg.pt").unlink()
    res = cli(*run_args(data, run_copy))
    succeeded(res)
    assert (run_copy / "round_1" / "seg.pt").is_file()
    assert report_rounds(run_copy) == [0, 1]


# --------------------------------------------------------------------------------------------
# Tracebacks where one line belongs


@pytest.mark.parametrize("command", ["run", "synth"])
@pytest.mark.parametrize("where", ["file", "under_file", "read_only"])
def test_out_that_cannot_be_a_folder_is_one_line(data, tmp_path, command, where):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = {"file": a_file, "under_file": a_file / "sub" / "o",
           "read_only": read_only_dir(tmp_path) / "o"}[where]
    if command == "run":
        res = cli(*run_args(data, out))
    else:
        res = cli("synth", str(out), "--train", "4", "--val", "2", "--size", "64", "--no-progress")
    error_line(res, str(a_file) if where != "read_only" else str(out.parent))


def test_truncated_stage_record_is_named_and_redone(run_copy, data):
    record = run_copy / "round_0" / "cam_eval.json"
    record.write_text(record.read_text()[:30])
    res = cli(*run_args(data, run_copy))
    succeeded(res)
    assert str(record) in res.stderr and "redo" in res.stderr
    assert json.loads(record.read_text())["cam_miou"] >= 0
    assert report_rounds(run_copy) == [0, 1]


@pytest.mark.parametrize("victim", ["round_1/confounders/queries.npy", "round_1/cams/*.npz"])
def test_corrupt_cached_arrays_are_redone(run_copy, data, victim):
    path = sorted(run_copy.glob(victim))[0]
    if path.suffix == ".npz":
        path.write_bytes(b"")  # zero bytes
        # as if killed after the CAMs: the stages that read them are still to run
        for stage in ("cam_eval", "pseudo", "pseudo_eval", "seg_train", "seg_eval"):
            (run_copy / "round_1" / f"{stage}.json").unlink()
    else:
        path.write_bytes(path.read_bytes()[:100])
    res = cli(*run_args(data, run_copy))
    succeeded(res)
    assert str(path) in res.stderr
    assert report_rounds(run_copy) == [0, 1]
    assert path.stat().st_size > 100


def test_zero_byte_cam_file_is_one_message():
    import tempfile

    from causal_wsss.cam import load_cams
    from causal_wsss.errors import DataError

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.npz"
        path.write_bytes(b"")
        with pytest.raises(DataError, match="cannot read CAM file .*x.npz"):
            load_cams(path)


# --------------------------------------------------------------------------------------------
# State that does not know its inputs


def test_changed_data_is_refused_with_the_reason(tmp_path):
    data = tmp_path / "data"
    generate_synthetic(data, n_train=16, n_val=4, seed=0, size=64)
    out = tmp_path / "run"
    succeeded(cli(*run_args(data, out, rounds=0)))
    generate_synthetic(data, n_train=16, n_val=4, seed=1, size=64)  # same root, new images
    line = error_line(cli(*run_args(data, out, rounds=0)), "changed", "train", "--out")
    assert str(data) in line or str(out) in line
    record = json.loads((out / "round_0" / "cam_train.json").read_text())
    assert record["inputs"]["data"] and record["inputs"]["config"]


def test_fewer_rounds_keep_the_finished_rounds(run_copy, data):
    succeeded(cli(*run_args(data, run_copy, rounds=0)))
    assert report_rounds(run_copy) == [0, 1]
    assert json.loads((run_copy / "config.json").read_text())["rounds"] == 1


# --------------------------------------------------------------------------------------------
# Two runs in one folder


def _wait_for_lock(out: Path, pid: int, timeout: float = 120) -> None:
    lock = out / "run.lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(lock.read_text()).get("pid") == pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"pid {pid} never took {lock}")


def test_second_run_in_the_same_folder_is_refused_and_stale_locks_are_taken_over(data, tmp_path):
    out = tmp_path / "busy"
    args = run_args(data, out, "cam.epochs=100000", rounds=0)
    first = popen(*args)
    try:
        _wait_for_lock(out, first.pid)
        log_before = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
        error_line(cli(*args), str(out), f"pid {first.pid}", "run.lock")
        log_after = (out / "log.txt").read_text()
        assert log_after.startswith(log_before)  # the refused command wrote nothing to the log
    finally:
        first.send_signal(signal.SIGKILL)  # killed: its lock file stays behind
        first.wait()
    assert (out / "run.lock").exists()
    third = popen(*args)
    try:
        _wait_for_lock(out, third.pid)  # the stale lock is taken over
    finally:
        third.send_signal(signal.SIGKILL)
        third.wait()


# --------------------------------------------------------------------------------------------
# the checks underneath (fast, in-process)


def test_file_checks_find_truncated_files(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from causal_wsss.runfolder import file_problem

    files = {"zip": tmp_path / "a.pt", "npy": tmp_path / "a.npy", "png": tmp_path / "a.png",
             "json": tmp_path / "a.json"}
    torch.save({"model": torch.zeros(100)}, files["zip"])
    np.save(files["npy"], np.zeros((50, 50)))
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(files["png"])
    files["json"].write_text('{"a": 1}')
    for kind, path in files.items():
        assert file_problem(path, kind) is None, kind
        path.write_bytes(path.read_bytes()[:-5])
        assert file_problem(path, kind), kind
        path.write_bytes(b"")
        assert file_problem(path, kind) == "empty (0 bytes)"
        path.unlink()
        assert file_problem(path, kind) == "missing"


def test_data_fingerprint_follows_the_files(tmp_path):
    from causal_wsss.data import build_dataset
    from causal_wsss.runfolder import dataset_fingerprint

    generate_synthetic(tmp_path, n_train=4, n_val=2, seed=0, size=64)
    first = dataset_fingerprint(build_dataset("voc", tmp_path, "train"))
    assert dataset_fingerprint(build_dataset("voc", tmp_path, "train")) == first
    mask = tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "train_000002.png"
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    second = dataset_fingerprint(build_dataset("voc", tmp_path, "train"))
    assert second["sha256"] != first["sha256"] and second["images"] == first["images"] == 4


def test_every_stage_has_its_files_and_inputs_declared():
    from causal_wsss.stage_table import STAGE_ARTEFACTS, STAGE_INPUTS, STAGES

    assert set(STAGE_ARTEFACTS) == set(STAGES) == set(STAGE_INPUTS)
    assert all(dep in STAGES for deps in STAGE_INPUTS.values() for _, dep in deps)


def test_later_keys_at_their_defaults_leave_the_fingerprint_alone():
    """A folder written before a key existed resumes: every LATER_KEYS default is its neutral
    value, and a neutral later key or an IRN-only key of a run without IRN is left out."""
    import dataclasses

    from causal_wsss.config import ExperimentConfig, resolve
    from causal_wsss.runfolder import (
        IRN_ONLY,
        LATER_KEYS,
        config_fingerprint,
        legacy_config_fingerprint,
    )

    defaults = ExperimentConfig()
    for dotted, neutral in LATER_KEYS.items():
        section, key = dotted.split(".")
        assert getattr(getattr(defaults, section), key) == neutral, dotted
    # the cpu preset as it was before its later keys (no working size: cam_infer.work_long=0)
    cfg = resolve("cpu", ["data.root=/d", "pseudo.walk_reach=0", "pseudo.irn_steps=0",
                          "cam_infer.work_long=0"])
    before = cfg.to_dict()  # what a folder from before the later keys hashed
    before.pop("rounds")
    for dotted in LATER_KEYS:
        section, key = dotted.split(".")
        before[section].pop(key)
    before["cam"].pop("method")  # an IRN run: the CAM-method keys are left out too
    before.pop("esol")
    before.pop("paste")  # the interventions' sections, younger than the folder
    before.pop("negatives")
    import hashlib
    import json as _json

    old = hashlib.sha256(_json.dumps(before, sort_keys=True).encode()).hexdigest()[:20]
    assert legacy_config_fingerprint(cfg) == old
    changed_irn = resolve("cpu", ["data.root=/d", "pseudo.irn_radius=7", "cam_infer.work_long=0"])
    assert config_fingerprint(changed_irn) == config_fingerprint(cfg)  # refine=none
    with_irn = resolve("cpu", ["data.root=/d", "pseudo.refine=irn"])
    assert config_fingerprint(resolve("cpu", ["data.root=/d", "pseudo.refine=irn",
                                              "pseudo.irn_radius=7"])) != config_fingerprint(with_irn)
    assert config_fingerprint(resolve("cpu", ["data.root=/d", "context.adjustment=exact"])) \
        != config_fingerprint(cfg)
    assert all(dotted.startswith("pseudo.") for dotted in IRN_ONLY)
    assert not dataclasses.is_dataclass(cfg.pseudo.refine)
