"""bench/bench_round.py on a tiny data set: the per-stage table has its columns, the old and the
new path both run, and FLOPs and the peak are measured (no time is asserted)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "bench_round", Path(__file__).resolve().parents[1] / "bench" / "bench_round.py")
bench_round = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_round)


def _tiny_round(tmp_path) -> tuple[list[str], list[str]]:
    """Options and overrides for a round of seconds on 8 images of 64 px, no FLOPs or peak."""
    tiny = ["--data", str(tmp_path / "data"), "--train", "8", "--val", "4", "--size", "64",
            "--twins", "2", "--threads", "1", "--no-peak"]
    over = ["cam.epochs=1", "seg.iterations=1", "cam_infer.scales=1.0", "data.num_workers=0",
            "cam.crop_size=64", "cam.resize_long=56,80", "cam.batch_size=4", "seg.crop_size=64",
            "seg.batch_size=4", "data.twins_split=", "cam_infer.work_long=64"]
    return tiny, over


def test_bench_round_table(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        code = bench_round.main([
            "--data", str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--train", "16",
            "--val", "6", "--size", "64", "--twins", "2", "--threads", "1",
            "--json", str(tmp_path / "bench.json"),
            "cam.epochs=1", "seg.iterations=2", "cam_infer.scales=1.0,0.5",
            "cam_infer.work_long=72", "data.num_workers=0", "cam.crop_size=64",
            "cam.resize_long=56,80", "cam.batch_size=8", "seg.crop_size=64", "seg.batch_size=4"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    printed = capsys.readouterr().out
    assert "| " + " | ".join(bench_round.COLUMNS) + " |" in printed
    assert "| **round** |" in printed
    result = json.loads((tmp_path / "bench.json").read_text())
    rows = {row["stage"]: row for row in result["rows"]}
    assert set(rows) == set(bench_round.STAGES)
    for row in rows.values():
        assert set(row) == set(bench_round.COLUMNS)
        assert row["old_s"] is not None and row["new_s"] is not None
    for stage in ("cam_train", "cams", "twin_eval", "seg_train", "seg_eval"):
        assert rows[stage]["gflop"] > 0 and rows[stage]["peak_gflop_per_s"] > 0
    assert rows["cam_eval"]["gflop"] is None  # no network work
    assert set(result["figures"]) == {"old", "new"}
    assert result["matmul_gflop_per_s"] and all(v > 0 for v in result["matmul_gflop_per_s"].values())
    dtypes = {rows[s]["dtype"] for s in ("cam_train", "cams", "twin_eval", "seg_train", "seg_eval")}
    assert dtypes == {"float32"}  # amp=true runs fp32 on a CPU unless CAUSAL_WSSS_CPU_AMP=1
    assert set(result["matmul_gflop_per_s"]) == dtypes


def test_old_cpu_amp_on_runs_the_old_path_in_bf16(tmp_path, capsys, monkeypatch):
    """``--old-numerics 3 --old-cpu-amp on``: today's code in bf16 beside float32 (the bf16
    units are pretended here, so that it runs on any CPU); the records say which dtype ran, and
    the option is refused where it compares nothing or would emulate bf16."""
    import pytest

    from causal_wsss.constants import NUMERICS
    from causal_wsss.runtime import CPU_AMP_ENV

    tiny, over = _tiny_round(tmp_path)
    threads = torch.get_num_threads()
    monkeypatch.delenv(CPU_AMP_ENV, raising=False)
    monkeypatch.setattr(bench_round, "cpu_has_bf16", lambda: True)
    try:
        assert bench_round.main([*tiny, "--out", str(tmp_path / "runs"), "--old-numerics",
                                 str(NUMERICS), "--old-cpu-amp", "on", *over]) == 0
        assert os.environ.get(CPU_AMP_ENV) is None  # restored after the old path
        refusals = []
        for args in (["--old-numerics", str(NUMERICS)],  # today's path beside itself
                     ["--old-numerics", str(NUMERICS), "--old-cpu-amp", "off"],
                     ["--ab", "--old-cpu-amp", "on"]):
            with pytest.raises(SystemExit) as refused:
                bench_round.main([*tiny, "--out", str(tmp_path / "no"), *args])
            refusals.append((refused.value.code, capsys.readouterr().err))
        monkeypatch.setattr(bench_round, "cpu_has_bf16", lambda: False)  # would emulate bf16
        with pytest.raises(SystemExit) as refused:
            bench_round.main([*tiny, "--out", str(tmp_path / "no"), "--old-numerics",
                              str(NUMERICS), "--old-cpu-amp", "on"])
        refusals.append((refused.value.code, capsys.readouterr().err))
    finally:
        torch.set_num_threads(threads)
    assert [code for code, _ in refusals] == [2, 2, 2, 2]
    assert "differs from the new path's (off)" in refusals[0][1]
    assert "differs from the new path's (off)" in refusals[1][1]
    assert "--old-cpu-amp same" in refusals[2][1]
    assert "no bf16 units" in refusals[3][1]
    assert not (tmp_path / "no").exists()
    for name, dtype in (("old_0", "bfloat16"), ("new_0", "float32")):
        for stage in ("cam_train", "cams", "seg_train"):
            record = json.loads((tmp_path / "runs" / name / "round_0" / f"{stage}.json").read_text())
            assert record["numerics"] == NUMERICS and record["autocast_dtype"] == dtype


def test_the_old_path_runs_in_the_precision_it_had_on_this_cpu():
    """auto: the code before the issue ran bf16 autocast on a CPU with bf16 units (float32 on
    every CPU came with numerics 3), so that is what the default compares with."""
    resolve = bench_round.old_cpu_amp
    assert resolve("auto", 1, True) == "on" and resolve("auto", 2, True) == "on"
    assert resolve("auto", 1, False) == "same" and resolve("auto", 3, True) == "same"
    assert resolve("auto", 1, True, ab=True) == "same"  # --ab: one process, one precision
    assert resolve("off", 1, True) == "off" and resolve("on", 3, False) == "on"


def test_old_numerics_runs_the_older_code_path_beside_the_new(tmp_path, capsys):
    import pytest

    from causal_wsss.constants import NUMERICS

    tiny = ["--data", str(tmp_path / "data"), "--train", "8", "--val", "4", "--size", "64",
            "--twins", "2", "--threads", "1"]
    over = ["cam.epochs=1", "seg.iterations=1", "cam_infer.scales=1.0", "data.num_workers=0",
            "cam.crop_size=64", "cam.resize_long=56,80", "cam.batch_size=4", "seg.crop_size=64",
            "seg.batch_size=4", "data.twins_split="]
    threads = torch.get_num_threads()
    try:
        assert bench_round.main([*tiny, "--out", str(tmp_path / "runs"), "--no-peak",
                                 "--old-numerics", "2", *over]) == 0
        with pytest.raises(SystemExit) as refused:  # --ab compares with version 1 only
            bench_round.main([*tiny, "--out", str(tmp_path / "ab"), "--ab",
                              "--old-numerics", "2"])
    finally:
        torch.set_num_threads(threads)
    assert refused.value.code == 2 and "--old-numerics 1" in capsys.readouterr().err
    for name, level in (("old_0", 2), ("new_0", NUMERICS)):
        record = json.loads((tmp_path / "runs" / name / "round_0" / "cam_train.json").read_text())
        assert record["numerics"] == level
    configs = [json.loads((tmp_path / "runs" / n / "config.json").read_text())
               for n in ("old_0", "new_0")]
    assert configs[0]["cam_infer"]["work_long"] == configs[1]["cam_infer"]["work_long"]


def test_conv_backward_flops_count_groups():
    """torch's formula counts a depthwise convolution's weight gradient C times over."""
    x = torch.randn(1, 8, 10, 10, requires_grad=True)
    w = torch.randn(8, 1, 3, 3, requires_grad=True)
    with bench_round.flop_mode() as counter:
        torch.nn.functional.conv2d(x, w, padding=1, groups=8).sum().backward()
    forward = 2 * 8 * 10 * 10 * 9
    assert counter.get_total_flops() == 3 * forward  # forward, input and weight gradients


def test_rounds_in_processes_of_their_own(tmp_path, capsys, monkeypatch):
    """``--processes``: each round runs in a fresh child (this script with ``--one-path``), its
    result comes back as the in-process one does, and a child meant for malloc gets an
    environment without tcmalloc; the old path on malloc in this process is refused where this
    process runs another allocator."""
    import pytest

    from causal_wsss.runtime import REEXEC_ENV, TCMALLOC_ENV

    tiny, over = _tiny_round(tmp_path)
    threads = torch.get_num_threads()
    try:
        assert bench_round.main([*tiny, "--out", str(tmp_path / "runs"), "--processes",
                                 "--json", str(tmp_path / "bench.json"), *over]) == 0
        monkeypatch.setattr(bench_round, "allocator_name", lambda: "tcmalloc")
        with pytest.raises(SystemExit) as refused:
            bench_round.main([*tiny, "--out", str(tmp_path / "no"), "--no-processes", *over])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr()
    assert "every round in its own process" in printed.out
    assert refused.value.code == 2 and "--old-allocator malloc needs --processes" in printed.err
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["processes"] is True
    assert result["allocators"] == {"old": "malloc", "new": "malloc"}  # as this process
    for name in ("old", "new"):
        assert (tmp_path / "runs" / f"{name}_0" / "round_0" / "seg_eval.json").is_file()
        assert set(result["runs"][name][0]["seconds"]) == set(bench_round.STAGES) - {"twin_eval"}
    env = bench_round.malloc_env({"LD_PRELOAD": "/x/libtcmalloc_minimal.so.4:/y/libfoo.so",
                                  REEXEC_ENV: "1", "PATH": "/bin"})
    assert env == {"LD_PRELOAD": "/y/libfoo.so", TCMALLOC_ENV: "0", "PATH": "/bin"}
    assert "LD_PRELOAD" not in bench_round.malloc_env({"LD_PRELOAD": "/x/libtcmalloc.so"})
