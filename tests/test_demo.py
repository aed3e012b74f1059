"""`causal-wsss demo` end to end in smoke mode: CONTA's round and an intervention's round on the
same round 0, the side-by-side table and the figures; an unknown intervention is one line."""

from __future__ import annotations

import json

import pytest

from causal_wsss.cli import DEMO_OVERRIDES, DEMO_SIZES, main, run_demo
from causal_wsss.config import resolve
from causal_wsss.errors import ConfigError

SMOKE = ["seg.iterations=4", "cam_infer.scales=1.0", "cam_infer.sweep=0.05,0.6,0.05"]


def test_demo_compares_conta_and_an_intervention_on_one_round0(tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo(out=out, data=tmp_path / "synth", preset="smoke", overrides=SMOKE,
                      progress=False, n_train=16, n_val=4, size=64, twins=2,
                      intervention="paste", figures_dir=tmp_path / "figures")
    printed = capsys.readouterr().out
    arm = tmp_path / "demo_paste"
    arm_report = json.loads((arm / "report.json").read_text())
    assert [e["round"] for e in report["rounds"]] == [0, 1]
    assert arm_report["intervention"] == "paste"
    # round 0 is the very same: copied, stamped with where it came from
    assert arm_report["rounds"][0]["pseudo_miou"] == report["rounds"][0]["pseudo_miou"]
    record = json.loads((arm / "round_0" / "cam_train.json").read_text())
    assert record["shared_from"] == str(out.resolve())
    # the side-by-side table: one row per arm, CONTA's and paste's round 1 as in their reports
    rows = [line for line in printed.splitlines()
            if line.startswith(("round 0 (baseline)", "CONTA round 1", "paste round 1"))]
    assert len(rows) == 3
    assert f"{arm_report['rounds'][1]['pseudo_miou']:7.1f}" in rows[2]
    for name in ("demo_rounds.png", "demo_cams.png"):
        assert (out / "figures" / name).is_file() and (tmp_path / "figures" / name).is_file()
    # the quick demo (DEMO_OVERRIDES): round 0 trains the segmentation network (its
    # predictions build CONTA's dictionary), the last round stops at its pseudo-masks
    for run in (out, arm):
        assert (run / "round_0" / "seg_eval.json").is_file()
        assert not (run / "round_1" / "seg_train.json").exists()
        assert not (run / "round_1" / "seg_eval.json").exists()
    assert report["rounds"][0]["seg_miou"] is not None
    assert report["rounds"][1]["seg_miou"] is None and arm_report["rounds"][1]["seg_miou"] is None
    assert rows[1].split()[7] == "n/a"  # the seg column: "CONTA round 1", CAM, best (t), pseudo, seg


def test_demo_options_choose_the_quick_or_the_full_demo(monkeypatch):
    import causal_wsss.cli as cli

    calls = []
    monkeypatch.setattr(cli, "run_demo", lambda **kw: calls.append(kw) or {})
    assert main(["demo"]) == 0 and main(["demo", "--full", "--rounds", "2"]) == 0
    assert calls[0]["full"] is False and calls[1]["full"] is True
    assert calls[0]["out"] is None and calls[0]["data"] is None  # run_demo picks them by mode
    assert calls[1]["rounds"] == 2
    # the quick demo's changes are config keys the preset accepts
    cfg = resolve("cpu", list(DEMO_OVERRIDES))
    assert cfg.seg.last_round is False and cfg.seg.iterations < resolve("cpu").seg.iterations
    assert DEMO_SIZES["n_train"] < 400 and DEMO_SIZES["rho"] == 0.97


def test_demo_refuses_an_unknown_intervention_before_any_work(tmp_path, capsys):
    with pytest.raises(ConfigError, match="context.intervention.*expected one of"):
        run_demo(out=tmp_path / "demo", data=tmp_path / "synth", preset="smoke",
                 intervention="pasta", progress=False)
    assert not (tmp_path / "synth").exists()
    assert main(["demo", "--intervention", "pasta", "--out", str(tmp_path / "d"),
                 "--data", str(tmp_path / "s")]) == 2
    assert "pasta" in capsys.readouterr().err
