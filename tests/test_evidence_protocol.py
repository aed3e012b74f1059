"""The evidence protocol (causal_wsss.evidence): its statistics, and the whole protocol at the
smoke preset's size: fixed data, paired seeds, the shared round 0, the interventional arm."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from causal_wsss.evidence import (
    Job,
    Protocol,
    collect,
    interval,
    markdown_tables,
    per_seed_table,
    ratio_interval,
    run_protocol,
)


def test_interval_is_the_t_interval_with_the_sample_sd():
    v = [1.0, 2.0, 4.0]
    s = interval(v)
    assert s["mean"] == pytest.approx(7 / 3) and s["n"] == 3
    assert s["sd"] == pytest.approx(np.std(v, ddof=1))
    half = 4.302652729911275 * s["sd"] / math.sqrt(3)  # t_{0.975, 2}
    assert (s["lo"], s["hi"]) == (pytest.approx(s["mean"] - half), pytest.approx(s["mean"] + half))
    assert interval([None, 3.0])["sd"] is None and interval([])["mean"] is None


def test_ratio_interval_brackets_a_known_ratio():
    rng = np.random.default_rng(0)
    den = 10 + rng.normal(0, 0.5, 8)
    r = ratio_interval(0.3 * den, den)
    assert r["ratio"] == pytest.approx(0.3) and r["lo"] <= 0.3 <= r["hi"]
    assert ratio_interval([1.0], [2.0])["ratio"] is None


def test_jobs_put_the_primary_comparison_first(tmp_path):
    jobs = Protocol(tmp_path).jobs()
    assert jobs[:8] == [Job("conta", 0.9, s, 1) for s in range(8)]
    assert sum(j.arm == "conta" and j.rho == 0.9 and j.rounds == 2 for j in jobs) == 5
    assert {j.rho for j in jobs} == {None, 0.5, 0.7, 0.9, 0.97}


@pytest.mark.slow
def test_tiny_protocol_end_to_end(tmp_path):
    proto = Protocol(tmp_path / "ev", preset="smoke", main_seeds=(0, 1), other_seeds=(0,),
                     round2_seeds=(), sweep_rhos=(), variants=("uniform",), n_train=24, n_val=8,
                     size=96, twins=2)
    ran = run_protocol(proto, progress=False)
    assert ran == 2 + 4 + 1  # conta x2, interventional (train + transfer) x2, uniform x1
    assert run_protocol(proto, progress=False) == 0  # all finished: nothing reruns
    # one data set per rho, shared by every seed
    assert sorted(p.name for p in (tmp_path / "ev" / "data").iterdir()) == ["interventional",
                                                                              "rho0.9"]
    res = collect(proto)
    assert res["primary"]["n"] == 2 and res["primary"]["seeds"] == [0, 1]
    assert res["primary"]["sd"] is not None
    inter = res["paired"]["interventional@0.9"]["0"]["pseudo_miou"]
    assert inter["n"] == 2
    # the uniform control's round 0 is conta's, so its round 0 levels are identical
    conta0 = json.loads((tmp_path / "ev" / "conta" / "rho0.9_seed0" / "report.json").read_text())
    uni0 = json.loads((tmp_path / "ev" / "uniform" / "rho0.9_seed0" / "report.json").read_text())
    assert uni0["rounds"][0]["cam_miou_best"] == conta0["rounds"][0]["cam_miou_best"]
    assert res["vs_conta"]["uniform@0.9"]["pseudo_miou"]["n"] == 1
    record = json.loads((tmp_path / "ev" / "interventional" / "rho0.9_seed1" / "round_0"
                         / "cam_train.json").read_text())
    assert record["transferred_from"].endswith("interventional_train/seed1/round_0/cam_net.pt")
    text = markdown_tables(res) + per_seed_table(res)
    assert "Primary endpoint" in text and "pending" in text  # the arms not run are pending
    assert res["sweep"]["0.9"]["pseudo_miou"]["interventional"]["n"] == 2
    from causal_wsss.viz import plot_evidence_arms, plot_evidence_sweep

    plot_evidence_arms(res)
    plot_evidence_sweep(res)


def test_share_round0_refuses_a_config_that_round0_reads(tmp_path):
    from causal_wsss.config import resolve
    from causal_wsss.errors import ConfigError
    from causal_wsss.evidence import share_round0
    from causal_wsss.runfolder import config_fingerprint

    src = tmp_path / "conta"
    (src / "round_0").mkdir(parents=True)
    base = resolve("cpu", ["data.root=/d"], seed=0, rounds=1)
    base.save(src / "config.json")
    (src / "round_0" / "seg_predict.json").write_text('{"inputs": {"config": "x", "data": {}}}')
    variant = resolve("cpu", ["data.root=/d", "context.adjustment=exact"], seed=0, rounds=1)
    assert share_round0(src, tmp_path / "exact", variant)
    record = json.loads((tmp_path / "exact" / "round_0" / "seg_predict.json").read_text())
    assert record["inputs"]["config"] == config_fingerprint(variant)
    assert not share_round0(src, tmp_path / "exact", variant)  # already there
    other = resolve("cpu", ["data.root=/d", "cam.epochs=3"], seed=0, rounds=1)
    with pytest.raises(ConfigError, match="cam"):
        share_round0(src, tmp_path / "other", other)
