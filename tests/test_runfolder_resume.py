"""A run folder can always be resumed: after any crash, corrupt file or stray path, one rerun.

The reviewer's reproductions of the hostile pass (each a test below) and a property: for every
kind of file in a finished run folder and every fault (truncated, garbage bytes in the middle,
replaced by a folder), ONE rerun completes with the report of the uninterrupted run.

Runs are in-process (:func:`causal_wsss.pipeline.run_experiment`, the smoke preset shortened as
in tests/test_runfolder.py, about a second each); one finished folder is copied per case.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from causal_wsss.config import resolve
from causal_wsss.data.synthetic import generate_synthetic
from causal_wsss.errors import CausalWSSSError
from causal_wsss.pipeline import run_experiment

FAST = ("cam.epochs=1", "seg.iterations=2")  # the smoke preset, shorter still


def config(root: Path, rounds: int = 1):
    return resolve("smoke", [f"data.root={root}", *FAST], seed=0, rounds=rounds)


def run(root: Path, out: Path, rounds: int = 1) -> dict:
    return run_experiment(config(root, rounds), out, progress=False)


def saved_rounds(out: Path) -> list[dict]:
    return json.loads((out / "report.json").read_text())["rounds"]


def log_since(out: Path, start: int) -> str:
    return (out / "log.txt").read_text()[start:]


def log_size(out: Path) -> int:
    path = out / "log.txt"
    return len(path.read_text()) if path.is_file() else 0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root, n_train=16, n_val=4, seed=0, size=64)
    return root


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A finished two-round run folder and its report; tests break copies of it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    report = run(data, out)
    assert [e["round"] for e in report["rounds"]] == [0, 1]
    # the records the code writes pass the schema: a rerun redoes nothing
    start = log_size(out)
    assert run(data, out) == report
    assert "WARNING" not in log_since(out, start), log_since(out, start)
    return out, saved_rounds(out)


@pytest.fixture
def broken(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    return out


def resumes(data: Path, out: Path, expected: list[dict]) -> str:
    """Rerun ``out`` once; it completes with the uninterrupted run's report. Returns the log."""
    start = log_size(out)
    report = run(data, out)
    assert report["rounds"] == expected
    assert saved_rounds(out) == expected
    return log_since(out, start)


def corrupt_middle(path: Path, n: int = 64, seed: int = 0) -> None:
    """Overwrite ``n`` bytes in the middle of ``path`` with random bytes (size kept)."""
    raw = bytearray(path.read_bytes())
    start = max(0, len(raw) // 2 - n // 2)
    garbage = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    raw[start:start + n] = garbage[: len(raw) - start]
    path.write_bytes(bytes(raw))


def break_npy_header(path: Path, member: str) -> None:
    """An unterminated string in the .npy header of ``member`` of an .npz: numpy's header parser
    raises tokenize.TokenError, before the zip's CRC of a large member is checked."""
    raw = path.read_bytes()
    at = raw.index(b"'descr': '", raw.index(f"{member}.npy".encode()))
    path.write_bytes(raw[:at + 9] + b"'''" + raw[at + 12:])


def first(out: Path, pattern: str) -> Path:
    return sorted(out.glob(pattern))[0]


# --------------------------------------------------------------------------------------------
# 1. a pseudo-mask corrupted mid-file, its end chunk intact


def test_png_corrupt_mid_file_is_redone(data, finished, broken):
    from PIL import Image

    victim = first(broken, "round_1/pseudo/*.png")
    (broken / "round_1" / "pseudo_eval.json").unlink()  # a stage that reads it is still to run
    corrupt_middle(victim, n=16)
    assert victim.read_bytes().endswith(b"IEND\xaeB`\x82")
    with pytest.raises(OSError), Image.open(victim) as img:  # PIL cannot decode it
        img.load()
    log = resumes(data, broken, finished[1])
    assert str(victim) in log and "redo" in log
    with Image.open(victim) as img:
        img.load()


# --------------------------------------------------------------------------------------------
# 2. a CAM .npz whose inner (.npy) header is corrupted, read by a stage still to run


def test_npz_with_a_corrupt_inner_header_is_redone(data, finished, broken):
    victim = first(broken, "round_1/cams/*.npz")
    break_npy_header(victim, "high_res")
    (broken / "round_1" / "cam_eval.json").unlink()
    log = resumes(data, broken, finished[1])
    assert str(victim) in log and "redo" in log


def test_cam_file_with_a_corrupt_header_is_one_data_error(tmp_path):
    from causal_wsss.cam import CamCache, load_cams
    from causal_wsss.errors import DataError

    path = tmp_path / "x.npz"
    with open(path, "wb") as fh:
        np.savez(fh, keys=np.zeros(2, np.int16), high_res=np.zeros((2, 64, 64), np.float16))
    break_npy_header(path, "high_res")
    with pytest.raises(DataError, match="cannot read CAM file .*x.npz"):
        load_cams(path)
    with open(path, "wb") as fh:  # readable, but not CAMs: shapes that do not fit
        np.savez(fh, keys=np.zeros(2, np.int16), high_res=np.zeros((1, 4, 4), np.float16))
    with pytest.raises(DataError, match="x.npz"):
        CamCache(tmp_path).get("x")


# --------------------------------------------------------------------------------------------
# 3. binary garbage in run.lock


def test_binary_garbage_in_the_lock_file(data, finished, broken):
    (broken / "run.lock").write_bytes(b"\xff\xfe\x00\x81garbage\xc3(")
    resumes(data, broken, finished[1])


# --------------------------------------------------------------------------------------------
# 4. a per-image folder replaced by a file: the run's own path, repaired


def test_per_image_folder_replaced_by_a_file_is_repaired(data, finished, broken):
    shutil.rmtree(broken / "round_0" / "pseudo")
    (broken / "round_0" / "pseudo").write_text("x\n")
    log = resumes(data, broken, finished[1])
    assert str(broken / "round_0" / "pseudo") in log
    assert len(list((broken / "round_0" / "pseudo").glob("*.png"))) == 16
    start = log_size(broken)
    run(data, broken)  # and the next rerun has nothing to redo
    assert "WARNING" not in log_since(broken, start)


# --------------------------------------------------------------------------------------------
# 5. stage records that parse but do not hold what the stage writes


@pytest.mark.parametrize("content", [
    {},
    {"cam_miou": "abc"},
    {"cam_miou": None},
    {"cam_miou": float("inf")},
    {"leakage": [1, 2]},
    {"inputs": {"data": "abc", "config": 3}},
    [1, 2, 3],
], ids=["empty", "string", "null", "infinite", "list", "inputs", "not-an-object"])
def test_invalid_stage_record_is_redone(data, finished, broken, content):
    record = broken / "round_0" / "cam_eval.json"
    good = json.loads(record.read_text())
    record.write_text(json.dumps({**good, **content} if content and isinstance(content, dict)
                                 else content))
    log = resumes(data, broken, finished[1])
    assert str(record) in log and "redo" in log
    for entry in saved_rounds(broken):
        assert isinstance(entry["cam_miou"], float)


def test_record_schema_accepts_what_the_stages_write_and_names_what_is_wrong(finished):
    from causal_wsss.records import record_problem

    out = finished[0]
    for path in sorted(out.glob("round_*/*.json")):
        assert record_problem(path.stem, json.loads(path.read_text())) is None, path
    record = json.loads((out / "round_0" / "cam_eval.json").read_text())
    assert "cam_miou" in record_problem("cam_eval", {**record, "cam_miou": "abc"})
    assert "seconds" in record_problem("seg_predict", {"images": 3})
    assert "seg_miou" in record_problem("seg_eval", {"seconds": 1.0})
    # NaN is how a stage writes "nothing to average": accepted where the report allows null
    assert record_problem("cam_eval", {**record, "contrast_partner": float("nan")}) is None
    assert "cam_miou" in record_problem("cam_eval", {**record, "cam_miou": float("nan")})


def test_invalid_later_report_entries_are_not_copied(data, finished, broken):
    """A rerun with fewer rounds copies the later rounds' entries from report.json: only valid
    ones (an entry with "abc" for a figure is left out, with a warning naming the file)."""
    report = json.loads((broken / "report.json").read_text())
    report["rounds"][1]["seg_miou"] = "abc"
    (broken / "report.json").write_text(json.dumps(report))
    start = log_size(broken)
    out = run(data, broken, rounds=0)
    assert out["rounds"] == finished[1][:1]
    assert str(broken / "report.json") in log_since(broken, start)


# --------------------------------------------------------------------------------------------
# 6. every finished stage's files are checked, also those no later stage reads


@pytest.mark.parametrize("victim", ["round_0/pred/*.png", "round_0/cams/*.npz",
                                    "round_1/pseudo/*.png"])
def test_truncated_files_nobody_reads_any_more_are_noticed(data, finished, broken, victim):
    from causal_wsss.runfolder import file_problem

    path = first(broken, victim)
    kind = "png" if path.suffix == ".png" else "zip"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] + raw[-12:])  # truncated, the PNG end chunk kept
    log = resumes(data, broken, finished[1])
    assert str(path) in log
    assert file_problem(path, kind) is None


# --------------------------------------------------------------------------------------------
# 7. temporary files left by a kill


def test_stale_temporary_files_are_removed_under_the_lock(data, finished, broken):
    from causal_wsss.runfolder import RunLock

    stale = [broken / "round_0" / ".cam_net.pt.ab12cd_3.pt.tmp",
             broken / "round_0" / "cams" / ".train_000001.npz.qwerty12.npz.tmp",
             broken / "round_1" / "confounders" / ".dictionary.npy.zx9y8w7v.npy",
             broken / ".report.json.k2j3h4g5.json.tmp"]
    kept = [broken / "round_0" / ".hidden", broken / "notes.tmp",
            broken / "round_0" / "cam_net.pt.tmp"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    with RunLock(broken):  # another run holds the folder: nothing is touched
        with pytest.raises(CausalWSSSError, match="in use"):
            run(data, broken)
    assert all(path.exists() for path in stale)
    resumes(data, broken, finished[1])
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)


def test_the_temporary_names_are_those_atomic_path_makes(tmp_path):
    from causal_wsss.io import atomic_path
    from causal_wsss.runfolder import is_temporary_name

    names = []
    for target, suffix in (("cam_net.pt", ""), ("a.npz", ""), ("dictionary.npy", ".npy"),
                           ("x.png", ".png"), ("noext", ""), ("cam_eval.json", "")):
        with atomic_path(tmp_path / target, suffix=suffix) as tmp:
            names.append(tmp.name)
            assert is_temporary_name(tmp.name), tmp.name
            tmp.write_bytes(b"x")
    for name in ("cam_net.pt", ".hidden", "notes.tmp", ".a.b.tmp", "cam_net.pt.tmp",
                 ".cam_net.pt.TOOLONG12.pt.tmp", ".cam_net.pt.abcd1234.npz.tmp"):
        assert not is_temporary_name(name), name


# --------------------------------------------------------------------------------------------
# the property: every kind of file, every fault, one rerun


KINDS = {
    "stage record": "round_1/cam_eval.json",
    "checkpoint": "round_0/cam_net.pt",
    "CAM npz": "round_1/cams/*.npz",
    "pseudo-mask PNG": "round_0/pseudo/*.png",
    "prediction PNG": "round_0/pred/*.png",
    "dictionary": "round_1/confounders/dictionary.npy",
    "prior": "round_1/confounders/prior.npy",
    "query grids": "round_1/confounders/queries.npy",
    "dictionary meta": "round_1/confounders/meta.json",
    "report": "report.json",
    "config": "config.json",
    "lock": "run.lock",
}


def break_file(path: Path, fault: str) -> None:
    if path.name == "run.lock":  # empty after a clean end: a killed run leaves its holder
        path.write_text(json.dumps({"pid": 1, "host": "h", "started": "s", "command": "c"}))
    if fault == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif fault == "garbage":
        corrupt_middle(path)
    else:  # a folder in its place, holding something
        path.unlink()
        path.mkdir()
        (path / "stray").write_text("x")


@pytest.mark.parametrize("fault", ["truncated", "garbage", "folder"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_any_broken_file_is_resumed_by_one_rerun(data, finished, broken, kind, fault):
    path = first(broken, KINDS[kind])
    original = finished[0] / path.relative_to(broken)
    break_file(path, fault)
    log = resumes(data, broken, finished[1])
    assert path.is_file()
    if kind not in ("lock", "report"):  # noticed, named, and made again as it was
        assert str(path) in log, log
        if kind == "stage record":
            def figures(p: Path) -> dict:
                return {k: v for k, v in json.loads(p.read_text()).items() if k not in ("seconds", "cpu_seconds")}
            assert figures(path) == figures(original)
        elif kind == "checkpoint":  # the same weights (the history holds timings)
            import torch

            new, old = (torch.load(p, weights_only=True)["model"] for p in (path, original))
            assert new.keys() == old.keys()
            assert all(torch.equal(new[k], old[k]) for k in new)
        else:
            assert path.read_bytes() == original.read_bytes()
    start = log_size(broken)
    run(data, broken)  # whole again: the next rerun finds nothing to redo
    assert "WARNING" not in log_since(broken, start), log_since(broken, start)


def test_unreadable_config_with_records_of_another_config_is_refused(data, broken):
    """config.json is written again only when the stage records vouch for the configuration."""
    record = broken / "round_1" / "seg_eval.json"
    content = json.loads(record.read_text())
    content["inputs"]["config"] = "0" * 20  # computed with another configuration
    record.write_text(json.dumps(content))
    config_file = broken / "config.json"
    config_file.write_bytes(config_file.read_bytes()[:40])
    with pytest.raises(CausalWSSSError, match=f"{config_file}.*restore"):
        run(data, broken)
    assert (broken / "round_1" / "seg.pt").is_file()  # nothing deleted
