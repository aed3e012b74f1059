"""The evidence protocol (causal_wsss.evidence): its statistics, and the whole protocol at the
smoke preset's size: fixed data, paired seeds, the shared round 0, the interventional arm."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from causal_wsss.errors import ConfigError
from causal_wsss.evidence import Job, Protocol, run_protocol
from causal_wsss.evidence_tables import collect, markdown_tables, per_seed_table
from causal_wsss.stats import interval, ratio_interval


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


def test_ratio_interval_is_unresolved_when_the_denominator_may_be_zero():
    """A share of a gap whose own interval contains 0 is unresolved, even when the bootstrap
    of the ratio would look narrow (the numerator here is exactly 0.5 x the denominator)."""
    den = np.array([2.0, -1.0, 1.5, -0.5, 0.2])  # mean +0.24, its t interval spans 0
    r = ratio_interval(0.5 * den, den)
    assert r["ratio"] is None and r["lo"] is None and "contains 0" in r["unresolved"]
    resolved = ratio_interval(0.5 * (den + 3), den + 3)
    assert resolved["ratio"] == pytest.approx(0.5) and resolved["unresolved"] is None


def test_jobs_put_the_primary_comparison_first(tmp_path):
    jobs = Protocol(tmp_path).jobs()
    assert jobs[:8] == [Job("conta", 0.9, s, 1) for s in range(8)]
    assert sum(j.arm == "conta" and j.rho == 0.9 and j.rounds == 2 for j in jobs) == 5
    assert {j.rho for j in jobs} == {None, 0.5, 0.7, 0.9, 0.97}
    # variants and round 2 seed by seed: one rerun of a seed's round 0 serves all of them
    per_seed = [(j.seed, j.arm) for j in jobs
                if j.rho == 0.9 and j.arm in ("conta", "exact", "adamw", "gt_dict", "mmax",
                                              "uniform")][8:]
    assert per_seed[:6] == [(0, "exact"), (0, "adamw"), (0, "gt_dict"), (0, "mmax"),
                            (0, "uniform"), (0, "conta")]
    assert [s for s, _ in per_seed] == sorted(s for s, _ in per_seed)


@pytest.mark.slow
def test_tiny_protocol_end_to_end(tmp_path):
    proto = Protocol(tmp_path / "ev", preset="smoke", main_seeds=(0, 1), other_seeds=(0,),
                     round2_seeds=(), sweep_rhos=(), variants=("uniform",), n_train=24, n_val=8,
                     size=96, twins=2, esol_seeds=(), interventions=("paste",),
                     intervention_rhos=(0.9,), intervention_seeds=(0,))
    ran = run_protocol(proto, progress=False)
    assert ran == 2 + 4 + 1 + 1  # conta x2, interventional (train + transfer) x2, uniform, paste
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
    paste = res["interventions"]["paste@0.9"]  # round 1 on conta's round 0 of the same seed
    assert paste["paired"]["pseudo_miou"]["n"] == 1 and paste["oracle"] is False
    assert res["rounds"]["paste@0.9"]["0"]["pseudo_miou"]["mean"] == \
        res["rounds"]["conta@0.9"]["0"]["pseudo_miou"]["values"][0]
    record = json.loads((tmp_path / "ev" / "interventional" / "rho0.9_seed1" / "round_0"
                         / "cam_train.json").read_text())
    assert record["transferred_from"].endswith("interventional_train/seed1/round_0/cam_net.pt")
    # on the interventional set only the CAM network is trained: nothing reads the rest
    trained = tmp_path / "ev" / "interventional_train" / "seed1" / "round_0"
    assert sorted(p.name for p in trained.iterdir()) == ["cam_net.pt", "cam_train.json"]
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
    # a source written before a later key existed (its config.json lacks the key) shares its
    # round 0 when the key is at its neutral value, and not otherwise
    saved = json.loads((src / "config.json").read_text())
    del saved["seg"]["last_round"]
    (src / "config.json").write_text(json.dumps(saved))
    assert share_round0(src, tmp_path / "later", variant)
    quick = resolve("cpu", ["data.root=/d", "seg.last_round=false"], seed=0, rounds=1)
    with pytest.raises(ConfigError, match="seg"):
        share_round0(src, tmp_path / "quick", quick)
    # a round 0 run on its own (rounds=0: no seg_predict yet) is shared once its report says so
    alone = tmp_path / "alone"
    (alone / "round_0").mkdir(parents=True)
    base.save(alone / "config.json")
    (alone / "round_0" / "seg_eval.json").write_text('{"inputs": {"config": "x", "data": {}}}')
    assert not share_round0(alone, tmp_path / "v1", variant)  # round 0 not finished
    (alone / "report.json").write_text(json.dumps({"rounds": [{"round": 0}]}))
    assert share_round0(alone, tmp_path / "v1", variant)
    assert (tmp_path / "v1" / "round_0" / "seg_eval.json").is_file()


def _fake_run(out, arm, rho, seed, values, history=None):
    """A finished run folder as the pipeline leaves it (only what the tables read)."""
    from causal_wsss.evidence import ENDPOINTS

    run = out / arm / f"rho{rho}_seed{seed}"
    run.mkdir(parents=True)
    rounds = [{"round": r, "context_share": 1e-6, **{k: v for k in ENDPOINTS}}
              for r, v in enumerate(values)]
    (run / "report.json").write_text(json.dumps({"rounds": rounds}))
    if history:
        (run / "round_1").mkdir()
        (run / "round_1" / "cam_train.json").write_text(json.dumps({"history": history}))
    return run


def test_archive_round_trip_gives_the_same_tables_without_the_run_folders(tmp_path):
    from causal_wsss.evidence import archive_runs, load_archive

    hist = [{"w_m_abs": 1e-3, "alpha_max_mean": 0.2, "attention_logit_std": 0.01, "loss": 1.0},
            {"w_m_abs": 2e-3, "alpha_max_mean": 0.3, "attention_logit_std": 0.02, "loss": 0.5}]
    for seed, (a, b) in enumerate([(40.0, 41.0), (42.0, 42.5), (38.0, 37.0)]):
        _fake_run(tmp_path / "runs", "conta", 0.9, seed, [a, b], hist)
    _fake_run(tmp_path / "runs", "interventional", 0.9, 0, [45.0])
    arch = tmp_path / "evidence_runs.json"
    live = collect(Protocol(tmp_path / "runs"))
    assert archive_runs(Protocol(tmp_path / "runs"), arch) == 3 * 2 + 1
    runs = load_archive(arch)
    assert set(runs) == {"conta/rho0.9_seed0", "conta/rho0.9_seed1", "conta/rho0.9_seed2",
                         "interventional/rho0.9_seed0"}
    assert "loss" not in runs["conta/rho0.9_seed0"]["epoch_history"][0]  # reduced
    # a fresh folder with only the archive: the same tables, and nothing to reproduce
    fresh = collect(Protocol(tmp_path / "fresh", archive=arch))
    assert fresh.pop("reproduced") == [] and live.pop("reproduced") == []
    assert fresh == live
    assert fresh["primary"]["values"] == pytest.approx([1.0, 0.5, -1.0])


def _on_machine(monkeypatch, cpu: str, session: str) -> None:
    """Pretend the following runs are made on another machine (causal_wsss.evidence.machine_id)."""
    from causal_wsss import evidence

    monkeypatch.setattr(evidence, "machine_id",
                        lambda: {"torch": "2.14.1", "cpu": cpu, "session": session})


def test_archive_never_overwrites_and_a_rerun_is_checked_against_it(tmp_path, monkeypatch):
    from causal_wsss.evidence import archive_runs, load_archive
    from causal_wsss.evidence_tables import reproduction_table

    arch = tmp_path / "evidence_runs.json"
    _on_machine(monkeypatch, "AVX2", "first")
    _fake_run(tmp_path / "a", "conta", 0.9, 0, [40.0, 41.0])
    archive_runs(Protocol(tmp_path / "a"), arch)
    _on_machine(monkeypatch, "AVX512", "second")
    _fake_run(tmp_path / "b", "conta", 0.9, 0, [40.5, 41.0])  # another build's rerun
    res = collect(Protocol(tmp_path / "b", archive=arch))
    assert [(c["round"], c["archived"], c["rerun"]) for c in res["reproduced"]] == \
        [(0, 40.0, 40.5), (1, 41.0, 41.0)]
    assert "+0.50" in reproduction_table(res)
    assert res["primary"]["values"] == [pytest.approx(1.0)]  # the archive is the record
    own = collect(Protocol(tmp_path / "b"))  # without the archive: this folder's runs only
    assert own["primary"]["values"] == [pytest.approx(0.5)] and own["reproduced"] == []
    assert archive_runs(Protocol(tmp_path / "b"), arch) == 0  # nothing new: nothing overwritten
    assert load_archive(arch)["conta/rho0.9_seed0"]["rounds"]["0"]["pseudo_miou"] == 40.0


def test_skip_archived_and_the_seed_and_rho_filters(tmp_path):
    from causal_wsss.evidence import archive_runs, is_archived, load_archive

    arch = tmp_path / "evidence_runs.json"
    _fake_run(tmp_path / "a", "conta", 0.9, 0, [40.0, 41.0])
    _fake_run(tmp_path / "a", "interventional", 0.9, 0, [45.0])
    archive_runs(Protocol(tmp_path / "a"), arch)
    proto = Protocol(tmp_path / "b", seeds=(0,), rhos=(0.9,), archive=arch, skip_archived=True)
    jobs = proto.jobs()
    assert {j.seed for j in jobs} == {0} and {j.rho for j in jobs} == {None, 0.9}
    runs = load_archive(arch)
    assert is_archived(runs, proto, Job("conta", 0.9, 0, 1))
    assert not is_archived(runs, proto, Job("conta", 0.9, 0, 2))  # round 2 not archived
    assert is_archived(runs, proto, Job("interventional", None, 0, 0))  # its transfer is
    assert not is_archived(runs, proto, Job("exact", 0.9, 0, 1))
    with pytest.raises(Exception, match="not valid JSON"):
        arch.write_text("{")
        load_archive(arch)


def test_committed_archive_reproduces_the_committed_tables():
    """docs/tables/evidence.json is what the archive gives (no run folder needed)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "docs" / "tables"
    res = collect(Protocol(root / "no-such-folder", archive=root / "evidence_runs.json"))
    res.pop("reproduced")
    committed = json.loads((root / "evidence.json").read_text())
    committed.pop("reproduced", None)
    assert json.loads(json.dumps(res)) == committed


def test_the_sweep_figure_shows_the_levels_and_the_paired_differences_per_seed():
    from pathlib import Path

    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection

    from causal_wsss.viz import plot_evidence_sweep

    res = json.loads((Path(__file__).resolve().parents[1] / "docs" / "tables"
                      / "evidence.json").read_text())
    fig = plot_evidence_sweep(res)
    levels, paired = fig.axes
    assert len(levels.containers) == 3  # baseline, CONTA round 1, interventional
    assert len(paired.containers) == 2  # CONTA r1 - r0, interventional - r0
    dots = sum(len(c.get_offsets()) for c in paired.collections if isinstance(c, PathCollection))
    assert dots == sum(len(by_key["pseudo_miou"][arm]["values"])
                       for by_key in res["sweep"].values() for arm in ("conta", "interventional"))
    plt.close(fig)


@pytest.mark.slow
def test_a_variant_alone_runs_the_round_0_it_is_paired_with(tmp_path):
    """``--only exact --seeds 0``: one seed of one row, from nothing."""
    proto = Protocol(tmp_path / "ev", preset="smoke", main_seeds=(0, 1), other_seeds=(0, 1),
                     round2_seeds=(), sweep_rhos=(), variants=("uniform",), n_train=24, n_val=8,
                     size=96, twins=2, seeds=(1,))
    assert run_protocol(proto, only=["uniform"], progress=False) == 1
    conta = json.loads((tmp_path / "ev" / "conta" / "rho0.9_seed1" / "report.json").read_text())
    assert [e["round"] for e in conta["rounds"]] == [0]  # only the shared round 0
    uni = json.loads((tmp_path / "ev" / "uniform" / "rho0.9_seed1" / "report.json").read_text())
    assert [e["round"] for e in uni["rounds"]] == [0, 1]
    assert uni["rounds"][0]["pseudo_miou"] == conta["rounds"][0]["pseudo_miou"]
    assert not (tmp_path / "ev" / "uniform" / "rho0.9_seed0").exists()  # seed filter
    res = collect(proto)
    assert res["vs_conta"]["uniform@0.9"]["pseudo_miou"]["n"] == 0  # conta has no round 1
    assert res["paired"]["uniform@0.9"]["1"]["pseudo_miou"]["n"] == 1


def test_a_run_comes_from_one_machine(tmp_path, monkeypatch):
    """Round 2 made elsewhere replaces the archived record (rounds 0-1 of another machine) in
    the archive and in the tables: round t − round 0 never mixes machines."""
    from causal_wsss.evidence import archive_runs, load_archive

    arch = tmp_path / "evidence_runs.json"
    _on_machine(monkeypatch, "AVX2", "first")
    _fake_run(tmp_path / "a", "conta", 0.9, 0, [40.0, 41.0])
    archive_runs(Protocol(tmp_path / "a"), arch)
    _on_machine(monkeypatch, "AVX512", "second")
    _fake_run(tmp_path / "b", "conta", 0.9, 0, [40.4, 40.4, 40.9])  # rounds 0-2 elsewhere
    res = collect(Protocol(tmp_path / "b", archive=arch))
    assert res["primary"]["values"] == [pytest.approx(0.0)]  # 40.4 - 40.4, not 41.0 - 40.4
    assert [c["archived"] for c in res["reproduced"]] == [40.0, 41.0]
    assert archive_runs(Protocol(tmp_path / "b"), arch) == 3
    rec = load_archive(arch)["conta/rho0.9_seed0"]
    assert rec["machine"]["session"] == "second" and sorted(rec["rounds"]) == ["0", "1", "2"]
    assert rec["previous"][0]["rounds"]["1"]["pseudo_miou"] == 41.0
    # the replaced record's rounds stay in the reproduction check, from the archive alone
    from causal_wsss.evidence_tables import reproduction_table

    again = collect(Protocol(tmp_path / "fresh", archive=arch))
    assert [(c["round"], c["archived"], c["rerun"]) for c in again["reproduced"]] == \
        [(0, 40.0, 40.4), (1, 41.0, 40.4)]
    table = reproduction_table(again)
    assert "| conta/rho0.9_seed0 | 0 | 40.00 | 40.40 | +0.40 | torch" in table
    assert "AVX2" in table and "AVX512 (the record now)" in table
    # the same machine adds rounds to its own record
    _fake_run(tmp_path / "c", "exact", 0.9, 0, [40.4])
    archive_runs(Protocol(tmp_path / "c"), arch)
    (tmp_path / "c" / "exact").rename(tmp_path / "c" / "old")
    _fake_run(tmp_path / "c", "exact", 0.9, 0, [40.4, 40.2])
    assert archive_runs(Protocol(tmp_path / "c"), arch) == 1
    assert "previous" not in load_archive(arch)["exact/rho0.9_seed0"]


def test_a_variant_is_compared_with_conta_through_their_own_round_0(tmp_path):
    """(variant r1 − r0) − (conta r1 − r0): a round-0 offset between machines cancels."""
    _fake_run(tmp_path, "conta", 0.9, 0, [40.0, 40.0])  # archived elsewhere, say
    _fake_run(tmp_path, "exact", 0.9, 0, [40.5, 41.5])  # its round 0 rerun here: +0.5
    res = collect(Protocol(tmp_path))
    assert res["vs_conta"]["exact@0.9"]["pseudo_miou"]["values"] == [pytest.approx(1.0)]


def test_round_seconds_are_archived_and_give_the_protocol_cost(tmp_path):
    from causal_wsss.evidence import _round_seconds, archive_runs, load_archive
    from causal_wsss.evidence_tables import COST_KINDS, cost_line

    run = _fake_run(tmp_path / "runs", "conta", 0.9, 0, [40.0, 41.0])
    for r, stages in ((0, {"cam_train": 60.0, "cams": 120.0}), (1, {"cam_train": 90.0, "cams": 60.0})):
        (run / f"round_{r}").mkdir(exist_ok=True)
        for stage, sec in stages.items():
            (run / f"round_{r}" / f"{stage}.json").write_text(json.dumps({"seconds": sec}))
    shared = _fake_run(tmp_path / "runs", "uniform", 0.9, 0, [40.0, 40.5])
    (shared / "round_0").mkdir()
    (shared / "round_0" / "cams.json").write_text(json.dumps({"seconds": 9.0, "shared_from": "x"}))
    assert _round_seconds(run, 0) == 180.0 and _round_seconds(shared, 0) is None  # copied: no cost
    (shared / "round_0" / "cam_shrink.json").write_text(json.dumps({"seconds": 30.0}))
    assert _round_seconds(shared, 0, partial=True) == 30.0  # an ESOL ablation: what it ran
    assert _round_seconds(run, 5) is None
    inter = _fake_run(tmp_path / "runs", "interventional", 0.9, 0, [45.0])
    (inter / "round_0").mkdir()
    (inter / "round_0" / "cams.json").write_text(json.dumps({"seconds": 120.0}))
    proto = Protocol(tmp_path / "runs", main_seeds=(0,), other_seeds=(0,), round2_seeds=(0,),
                     sweep_rhos=(0.5,), variants=("uniform",), esol_seeds=(0,),
                     esol_ablations=("esol_noclip",))
    res = collect(proto)
    cost = res["cost"]
    assert cost["median_minutes"] == {COST_KINDS[0]: 3.0, COST_KINDS[1]: 2.5, COST_KINDS[2]: 2.0,
                                      COST_KINDS[3]: None, COST_KINDS[4]: None,
                                      COST_KINDS[5]: None}
    # rounds 0: conta at 0.9 and 0.5 (the interventional training apart); later: conta r1 at 0.9 and
    # 0.5, uniform r1, conta r2; transfers: 0.9 and 0.5; ESOL: rounds 0 of esol and the
    # ablation (a kind of its own: it shares ESOL's first stages), round 1 of esol (not timed
    # yet: the ESOL hours are unknown, the rest is not)
    assert cost["rounds"] == {COST_KINDS[0]: 2, COST_KINDS[1]: 4, COST_KINDS[2]: 2,
                              COST_KINDS[3]: 1, COST_KINDS[4]: 1, COST_KINDS[5]: 1}
    # the interventional CAM training runs only the training: a round 0 less a transfer
    assert cost["trainings"] == 1 and cost["training_minutes"] == pytest.approx(1.0)
    assert cost["esol_hours"] is None and "expansion) (not yet timed)" in cost_line(res)
    assert cost["protocol_hours"] == pytest.approx((2 * 3.0 + 1.0 + 4 * 2.5 + 2 * 2.0) / 60)
    assert "round 0 3.0 min (n=1)" in cost_line(res) and "about 0.3 hours" in cost_line(res)
    assert "1 interventional CAM trainings (" in cost_line(res) and "1.0 min)" in cost_line(res)
    # the archive keeps the timings, so a clone without the run folders gives the same cost
    arch = tmp_path / "arch.json"
    archive_runs(proto, arch)
    assert load_archive(arch)["conta/rho0.9_seed0"]["rounds"]["1"]["seconds"] == 150.0
    fresh = Protocol(tmp_path / "fresh", main_seeds=(0,), other_seeds=(0,), round2_seeds=(0,),
                     sweep_rhos=(0.5,), variants=("uniform",), esol_seeds=(0,),
                     esol_ablations=("esol_noclip",), archive=arch)
    assert collect(fresh)["cost"] == cost


def _fake_esol(out, arm, seed, values, stage0=40.0, expand=35.0):
    """An ESOL run folder: the endpoints plus each stage's CAM figures in round 0."""
    from causal_wsss.evidence import ESOL_KEYS

    run = _fake_run(out, arm, 0.9, seed, values)
    report = json.loads((run / "report.json").read_text())
    extra = {k: 0.5 for k in ESOL_KEYS}
    extra.update({"esol_stage0_cam_miou_best": stage0, "esol_expand_cam_miou_best": expand,
                  "esol_expand_mean_abs_offset": 0.05, "esol_shrink_mean_abs_offset": 0.04})
    report["rounds"][0].update({k: v for k, v in extra.items() if k != "cam_miou_best"})
    (run / "report.json").write_text(json.dumps(report))
    return run


def test_the_esol_extension_is_paired_with_irn_and_archived(tmp_path):
    from causal_wsss.evidence import ESOL_ABLATIONS, INTERVENTION_NAMES, Job, archive_runs
    from causal_wsss.evidence_tables import markdown_tables

    proto = Protocol(tmp_path / "runs")
    jobs = [j for j in proto.jobs() if j.arm not in INTERVENTION_NAMES]  # they come last
    assert jobs[-(3 + 3 * len(ESOL_ABLATIONS)):][:3] == [Job("esol", 0.9, s, 1) for s in range(3)]
    assert {j.rounds for j in jobs if j.arm in ESOL_ABLATIONS} == {0}
    for seed, (irn0, irn1, e0, e1, noclip) in enumerate([(40.0, 40.0, 37.0, 37.5, 38.0),
                                                         (41.0, 41.5, 39.0, 39.0, 40.5),
                                                         (39.0, 39.0, 36.0, 36.0, 36.5)]):
        _fake_run(tmp_path / "runs", "conta", 0.9, seed, [irn0, irn1])
        _fake_esol(tmp_path / "runs", "esol", seed, [e0, e1])
        _fake_esol(tmp_path / "runs", "esol_noclip", seed, [noclip])
        _fake_esol(tmp_path / "runs", "esol_noclip_id", seed, [noclip + 1.0 - seed])
    _fake_run(tmp_path / "runs", "conta", 0.9, 3, [30.0, 30.0])  # IRN only: not in ESOL's rows
    res = collect(proto)
    e = res["esol"]
    assert e["vs_irn"]["pseudo_miou"]["values"] == [-3.0, -2.0, -3.0]
    assert e["conta_gain"]["pseudo_miou"]["values"] == [0.5, 0.0, 0.0]
    assert e["conta_gain_vs_irn"]["pseudo_miou"]["values"] == [0.5, -0.5, 0.0]
    assert e["ablations"]["esol_noclip"]["pseudo_miou"]["values"] == [1.0, 1.5, 0.5]
    assert e["stages"]["esol"]["esol_stage0_cam_miou_best"]["mean"] == 40.0
    # the no-samplers control: against the no-clip run it controls, and against IRN's round 0
    c = e["controls"]["esol_noclip_id"]
    assert c["of"] == "esol_noclip"
    assert c["controlled_minus_control"]["pseudo_miou"]["values"] == [-1.0, 0.0, 1.0]
    assert c["control_minus_irn"]["pseudo_miou"]["values"] == [-1.0, -0.5, -3.5]
    text = markdown_tables(res)
    assert ("| ESOL, no clip − ESOL, no clip, no samplers (control): what the samplers add "
            "(round 0) | +0.00") in text
    assert "no samplers (control) − IRN round 0: what two more head trainings add | -1.67" in text
    assert "| ESOL round 0 − IRN round 0 | -2.67" in text
    assert "| ESOL, no clip − ESOL (round 0) | +1.00" in text
    assert "| ESOL (re-implemented) | stage 0 (IRNet's CAM) | 40.0" in text
    # levels: IRN on ESOL's seeds (0-2, not seed 3), beside ESOL's rounds and the ablation
    assert "| IRN (IRNet's CAM), round 0 | 40.00 ± 1.00 [" in text
    assert "| ESOL (re-implemented), round 1 + CONTA | 37.50 ± 1.50 [" in text
    assert "| ESOL, no clip, round 0 | 38.33 ± 2.02 [" in text
    assert "ESOL (re-implemented)" not in text.split("**A second CAM method")[0]  # own section
    # the archive keeps ESOL's stage figures: the same tables without the run folders
    arch = tmp_path / "arch.json"
    archive_runs(proto, arch)
    fresh = collect(Protocol(tmp_path / "fresh", archive=arch))
    assert fresh["esol"] == e


@pytest.mark.slow
def test_esol_runs_under_the_protocol(tmp_path):
    """``--only esol esol_noclip --seeds 0`` on the smoke preset: ESOL's rounds 0-1 and an
    ablation's round 0, each stage's figures in the tables."""
    proto = Protocol(tmp_path / "ev", preset="smoke", main_seeds=(0,), other_seeds=(),
                     round2_seeds=(), sweep_rhos=(), n_train=16, n_val=4, size=64, twins=2,
                     esol_seeds=(0,), esol_ablations=("esol_noclip",),
                     overrides=("seg.iterations=4", "cam_infer.scales=1.0"))
    assert run_protocol(proto, only=["esol", "esol_noclip"], progress=False) == 2
    res = collect(proto)
    stages = res["esol"]["stages"]
    assert stages["esol"]["esol_stage0_cam_miou_best"]["n"] == 1
    assert stages["esol_noclip"]["esol_expand_mean_abs_offset"]["n"] == 1
    assert res["esol"]["conta_gain"]["pseudo_miou"]["n"] == 1
    assert res["esol"]["vs_irn"]["pseudo_miou"]["n"] == 0  # no IRN run here


@pytest.mark.slow
def test_esol_ablations_share_the_stages_they_cannot_change_and_no_number_moves(tmp_path):
    """An ablation's round 0 copies ESOL's stage 0 (and, for a shrinkage key, the expansion
    and its evaluation); the same ablation run from nothing gives the same numbers."""
    from causal_wsss.evidence import ESOL_KEYS, job_config
    from causal_wsss.pipeline import run_experiment

    proto = Protocol(tmp_path / "ev", preset="smoke", main_seeds=(0,), other_seeds=(),
                     round2_seeds=(), sweep_rhos=(), n_train=16, n_val=4, size=64, twins=2,
                     esol_seeds=(0,), esol_ablations=("esol_area02", "esol_noclip"),
                     overrides=("seg.iterations=4", "cam_infer.scales=1.0"))
    assert run_protocol(proto, only=["esol", "esol_area02", "esol_noclip"], progress=False) == 3

    def shared(arm: str) -> list[str]:
        rd = proto.run_dir(Job(arm, 0.9, 0, 0)) / "round_0"
        return [p.stem for p in sorted(rd.glob("*.json"))
                if "shared_from" in json.loads(p.read_text())]

    assert shared("esol_area02") == ["cam_expand", "cam_train", "esol_eval"]
    assert shared("esol_noclip") == ["cam_train"]  # the clip changes the expansion
    job = Job("esol_area02", 0.9, 0, 0)
    alone = tmp_path / "alone"
    run_experiment(job_config(proto, job), alone, progress=False)

    def entry(run) -> dict:
        return json.loads((run / "report.json").read_text())["rounds"][0]

    a, b = entry(proto.run_dir(job)), entry(alone)
    keys = ["pseudo_miou", "cam_miou_best", "seg_miou", *ESOL_KEYS]
    assert all(a.get(k) is not None for k in keys)
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


def test_the_interventions_tables_split_the_gap_and_draw(tmp_path):
    """An arm whose round-1 gain is half the interventional gap in every seed closes half of
    it; the table names it, the figure draws it; an arm at a rho whose gap spans 0 is
    unresolved; intervention jobs share conta's round 0 and follow the protocol's."""
    from causal_wsss.evidence_tables import markdown_interventions
    from causal_wsss.viz import plot_interventions

    runs = tmp_path / "runs"
    gaps = {0.97: [8.0, 9.0, 10.0, 7.0], 0.5: [1.0, -1.0, 0.5, -0.4]}
    for rho, gap in gaps.items():
        for seed, g in enumerate(gap):
            base = 35.0 + seed
            _fake_run(runs, "conta", rho, seed, [base, base])
            _fake_run(runs, "interventional", rho, seed, [base + g])
            _fake_run(runs, "paste", rho, seed, [base, base + 0.5 * g])
    res = collect(Protocol(runs))
    row = res["interventions"]["paste@0.97"]
    assert row["paired"]["pseudo_miou"]["mean"] == pytest.approx(0.5 * np.mean(gaps[0.97]))
    closed = row["gap"]["pseudo_miou"]["closed"]
    assert closed["ratio"] == pytest.approx(0.5) and closed["lo"] <= 0.5 <= closed["hi"]
    assert closed["per_seed"] == [pytest.approx(0.5)] * 4
    assert res["interventions"]["paste@0.5"]["gap"]["pseudo_miou"]["closed"]["ratio"] is None
    text = markdown_interventions(res)
    assert "paste (re-composition, CDA) | 0.97" in text and "unresolved" in text
    fig = plot_interventions(res)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel().startswith("share")
    # rho on an ordinal axis: one slot per rho, labelled with its value
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0.5", "0.97"]
    jobs = Protocol(tmp_path).jobs()
    iv = [j for j in jobs if j.arm in ("paste", "negatives", "appearance")]
    assert iv[0] == Job("paste", 0.97, 0, 1) and {j.rho for j in iv} == {0.97, 0.9, 0.5}
    assert jobs.index(iv[0]) > max(i for i, j in enumerate(jobs) if j.arm.startswith("esol"))


def test_the_short_interventions_table_and_the_findings_read_the_tables(tmp_path):
    """intervention_rows: one row per arm and rho, strongest rho first, the share closed or
    'unresolved'; findings: one line per finding, 'pending' where the tables lack it."""
    from causal_wsss.evidence_tables import findings, intervention_rows, published

    runs = tmp_path / "runs"
    gaps = {0.97: [8.0, 9.0, 10.0, 7.0], 0.5: [1.0, -1.0, 0.5, -0.4]}
    for rho, gap in gaps.items():
        for seed, g in enumerate(gap):
            base = 35.0 + seed
            _fake_run(runs, "conta", rho, seed, [base, base])
            _fake_run(runs, "interventional", rho, seed, [base + g])
            _fake_run(runs, "paste", rho, seed, [base, base + 0.5 * g])
    res = collect(Protocol(runs))
    rows = intervention_rows(res)
    assert [(r["rho"], r["n"]) for r in rows] == [(0.97, 4), (0.5, 4)]
    assert rows[0]["arm"].startswith("paste") and rows[0]["gap closed"].startswith("+0.50 [")
    assert rows[0]["pseudo r1 − r0"].startswith(f"{0.5 * np.mean(gaps[0.97]):+.2f} [")
    assert rows[1]["gap closed"] == "unresolved"
    assert intervention_rows({"interventions": {}}) == []
    assert any("pending" in line for line in findings(res))  # no rho 0.9 in this protocol
    committed = published()
    if committed is not None:
        lines = findings(committed)
        assert f"{committed['primary']['mean']:+.2f}" in lines[0]
        assert sum(line.startswith("rho ") for line in lines) == len(committed["sweep"])


def test_per_class_values_are_read_from_the_round_records(tmp_path):
    from causal_wsss.evidence import per_class_values
    from causal_wsss.io import write_json

    write_json(tmp_path / "pseudo_eval.json", {"miou": 50.0, "iou_per_class": {
        "background": 90.0, "horse": 40.5, "person": float("nan")}})
    write_json(tmp_path / "twin_eval.json", {"per_class": {
        "horse": {"fp_rate_preferred": 0.25, "context_effect": 1.0}, "boat": {"groups": 3}}})
    assert per_class_values(tmp_path) == {"pseudo_iou/background": 90.0,
                                          "pseudo_iou/horse": 40.5, "fp_preferred/horse": 0.25}
    (tmp_path / "twin_eval.json").write_text("{broken")
    assert "fp_preferred/horse" not in per_class_values(tmp_path)


def test_the_verdict_checks_each_arm_against_the_target_and_names_the_best(tmp_path):
    """negatives: 0.8 of the gap in every seed, false positives 0.6 -> 0.2, -0.2 at rho 0.5:
    the target is met; paste: 0.1 of the gap, false positives unchanged: not met. The detail
    tables give each pair of arms once and the per-class changes."""
    from causal_wsss.evidence import ENDPOINTS
    from causal_wsss.evidence_tables import (
        intervention_verdict,
        markdown_intervention_details,
        markdown_tables,
    )

    def run(arm, rho, seed, rounds):
        folder = tmp_path / arm / f"rho{rho}_seed{seed}"
        folder.mkdir(parents=True)
        entries = [{"round": r, **{k: 0.0 for k in ENDPOINTS}, **e} for r, e in enumerate(rounds)]
        (folder / "report.json").write_text(json.dumps({"rounds": entries}))
        if len(rounds) > 1:  # per-class records of round 1 and round 0
            for r in range(len(rounds)):
                (folder / f"round_{r}").mkdir()
                (folder / f"round_{r}" / "pseudo_eval.json").write_text(json.dumps(
                    {"iou_per_class": {"horse": 30.0 + 5 * r * (arm == "negatives")}}))

    gaps = {0.97: [8.0, 9.0, 10.0, 7.0], 0.5: [0.5, -0.5, 0.3, -0.2]}
    share = {"negatives": 0.8, "paste": 0.1, "control_steps": 0.3}
    for rho, gap in gaps.items():
        for seed, g in enumerate(gap):
            base = 35.0 + seed
            r0 = {"pseudo_miou": base, "fp_rate_preferred": 0.6}
            run("conta", rho, seed, [r0, r0])
            run("interventional", rho, seed, [{"pseudo_miou": base + g, "fp_rate_preferred": 0.1}])
            for arm, f in share.items():
                if arm == "control_steps" and rho != 0.97:
                    continue
                gain = f * g if rho == 0.97 else -0.2
                fp1 = 0.2 if arm == "negatives" else 0.6
                run(arm, rho, seed, [r0, {"pseudo_miou": base + gain, "fp_rate_preferred": fp1}])
    res = collect(Protocol(tmp_path))
    lines = intervention_verdict(res)
    neg = next(v for v in lines if v.startswith("context negatives"))
    paste = next(v for v in lines if v.startswith("paste"))
    assert "closes 0.80" in neg and "60% -> 20% (target halved: met)" in neg
    assert "at rho 0.5 -0.20 points" in neg and "target >= -1: met" in neg
    assert "closes 0.10" in paste and "interval above 0: not met" in paste
    assert "(target halved: not met)" in paste
    assert lines[-1] == "best arm without ground truth: context negatives (W-OoD); the target is met"
    beyond = lines[lines.index(neg) + 1]  # negatives minus its control: 0.8 - 0.3 of the gap
    assert beyond.startswith("  beyond its control") and "closes 0.50" in beyond
    assert "-40 points" in beyond  # false positives 0.2 against the control's 0.6
    assert not any("control: negatives' extra steps at rho" in v for v in lines)  # not an arm
    details = markdown_intervention_details(res)
    pair_rows = [line for line in details.splitlines() if line.startswith("| 0.97 |")]
    assert len(pair_rows) == 3  # each pair once
    row = next(r for r in pair_rows if "| paste (re-composition, CDA) | context negatives" in r)
    assert "-5.95" in row  # (0.1 - 0.8) x the mean gap 8.5
    assert "| horse | +0.0 / – | +5.0 / – | +0.0 / – |" in details  # control, negatives, paste
    assert "**Against the target**" in markdown_tables(res)


def test_a_rerun_on_newer_numerics_supersedes_the_record(tmp_path, monkeypatch):
    """A run folder made by the code after the speed issue (its config has cam_infer.work_long)
    replaces an archived record of older numerics when it holds all of its rounds, in the tables
    and in the archive (the old record kept under "previous" and in the reproduction check); one
    that lacks a round of the record does not (CONTA's round 1 stays the record). A difference
    of levels pairs runs of one numerics: section 0's gap the old interventional round with the
    old confounded round 0, an intervention's gap the new one with the arm's new round 0."""
    from causal_wsss.constants import NUMERICS
    from causal_wsss.evidence import archive_runs, load_archive, numerics_of

    def stamp(run):
        (run / "config.json").write_text(json.dumps({"cam_infer": {"work_long": 280}}))
        return run

    def gaps(res):
        return (res["paired"]["interventional@0.97"]["0"]["pseudo_miou"]["values"],
                res["interventions"]["negatives@0.97"]["gap"]["pseudo_miou"]
                ["interventional"]["values"])

    arch = tmp_path / "evidence_runs.json"
    _on_machine(monkeypatch, "AVX512", "first")
    _fake_run(tmp_path / "a", "conta", 0.97, 0, [37.5, 37.5])
    _fake_run(tmp_path / "a", "interventional", 0.97, 0, [45.0])
    archive_runs(Protocol(tmp_path / "a"), arch)
    _on_machine(monkeypatch, "AVX512", "second")
    new_int = stamp(_fake_run(tmp_path / "b", "interventional", 0.97, 0, [45.6]))
    stamp(_fake_run(tmp_path / "b", "conta", 0.97, 0, [38.0]))  # round 0 only
    stamp(_fake_run(tmp_path / "b", "negatives", 0.97, 0, [38.0, 44.0]))
    assert numerics_of(new_int) == 2 and numerics_of(tmp_path / "a" / "conta") == 1
    assert NUMERICS >= 3  # later code stamps its stage records instead
    res = collect(Protocol(tmp_path / "b", archive=arch))
    old_gap, new_gap = gaps(res)
    assert old_gap == [pytest.approx(45.0 - 37.5)] and new_gap == [pytest.approx(45.6 - 38.0)]
    assert [(c["run"], c["archived"], c["rerun"]) for c in res["reproduced"]] == \
        [("conta/rho0.97_seed0", 37.5, 38.0), ("interventional/rho0.97_seed0", 45.0, 45.6)]
    assert archive_runs(Protocol(tmp_path / "b"), arch) == 1 + 2  # interventional, negatives
    runs = load_archive(arch)
    rec = runs["interventional/rho0.97_seed0"]
    assert rec["rounds"]["0"]["pseudo_miou"] == 45.6 and rec["rounds"]["0"]["numerics"] == 2
    assert rec["previous"][0]["rounds"]["0"]["pseudo_miou"] == 45.0
    assert runs["conta/rho0.97_seed0"]["rounds"]["1"]["pseudo_miou"] == 37.5  # kept
    fresh = collect(Protocol(tmp_path / "fresh", archive=arch))
    assert gaps(fresh) == (old_gap, new_gap)
    assert ("interventional/rho0.97_seed0", 45.0, 45.6) in \
        [(c["run"], c["archived"], c["rerun"]) for c in fresh["reproduced"]]
    assert archive_runs(Protocol(tmp_path / "b"), arch) == 0  # published once


def test_a_post_hoc_arm_is_marked_and_never_the_best_pre_registered_arm(tmp_path):
    from causal_wsss.evidence import POST_HOC
    from causal_wsss.evidence_tables import intervention_verdict

    assert "negatives_margin" in POST_HOC
    for seed, (r0, neg, margin, inter) in enumerate([(40.0, 43.0, 46.0, 48.0),
                                                     (41.0, 44.5, 47.0, 49.0),
                                                     (39.0, 41.0, 45.5, 47.5)]):
        _fake_run(tmp_path, "negatives", 0.97, seed, [r0, neg])
        _fake_run(tmp_path, "negatives_margin", 0.97, seed, [r0, margin])
        _fake_run(tmp_path, "interventional", 0.97, seed, [inter])
    lines = intervention_verdict(collect(Protocol(tmp_path)))
    margin_line = next(line for line in lines if "one-cell margin" in line and "n=3" in line)
    assert margin_line.startswith("section 7.3: ")
    assert "rho 0.5 not run (section 7.3 registers rho 0.97 only)" in margin_line
    assert any(line.startswith("best arm without ground truth: context negatives (W-OoD);")
               for line in lines)  # the margin arm closes more, but is post hoc
    assert any(line.startswith("post hoc: context negatives, one-cell margin") and
               "a lead to confirm, not a claim" in line for line in lines)


def _work(part) -> float:
    from causal_wsss.evidence import job_work

    seen: set = set()
    return sum(job_work(j, seen) for j in part)


def test_shards_deal_whole_groups_and_balance_the_work(tmp_path):
    from causal_wsss.evidence import INTERVENTION_NAMES, ROUND_WORK, shard_jobs, shard_key

    every = Protocol(tmp_path / "ev").jobs()
    proper = [j for j in every if not j.arm.startswith("esol") and j.arm not in INTERVENTION_NAMES]
    for jobs in (every, proper):
        for n in (1, 2, 3):
            parts = [shard_jobs(jobs, k, n) for k in range(1, n + 1)]
            assert sorted(map(repr, sum(parts, []))) == sorted(map(repr, jobs))  # each job once
            owners = {}
            for k, part in enumerate(parts):
                assert part == [j for j in jobs if j in part]  # the protocol's order kept
                for job in part:  # a (rho, seed) and an interventional seed never split
                    assert owners.setdefault(shard_key(job), k) == k
            work = [_work(part) for part in parts]
            assert max(work) <= 1.03 * sum(work) / n
    # the protocol proper: 23 rounds 0, 53 later rounds, 23 transfers, 8 trainings
    assert _work(proper) == pytest.approx(23 + 53 * ROUND_WORK["later round"]
                                          + 23 * ROUND_WORK["transfer"]
                                          + 8 * ROUND_WORK["training"])
    jobs = every
    assert shard_jobs(jobs, 2, 2) == shard_jobs(list(jobs), 2, 2)  # the same deal every time
    with pytest.raises(ConfigError, match="3/2"):
        shard_jobs(jobs, 3, 2)


def _run_shard(out: str, k: int, n: int) -> None:  # a spawned process: one shard
    import torch

    torch.set_num_threads(1)
    run_protocol(_tiny_two_seeds(out), progress=False, shard=(k, n))


def _tiny_two_seeds(out) -> Protocol:
    return Protocol(Path(out), preset="smoke", main_seeds=(0, 1), other_seeds=(), round2_seeds=(),
                    sweep_rhos=(), variants=(), n_train=24, n_val=8, size=96, twins=2,
                    esol_seeds=(), interventions=())


def test_two_shards_side_by_side_run_the_protocol_once(tmp_path):
    """Two processes, one shard each, on one folder: both need the same two data sets (made
    once, under a lock); between them every job runs once and the tables can be written."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_run_shard, args=(str(tmp_path / "ev"), k, 2)) for k in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0, 0]
    proto = _tiny_two_seeds(tmp_path / "ev")
    assert run_protocol(proto, progress=False) == 0  # nothing left to run
    assert sorted(p.name for p in (tmp_path / "ev" / "data").iterdir() if p.is_dir()) == [
        "interventional", "rho0.9"]
    res = collect(proto)
    assert res["primary"]["n"] == 2 and res["paired"]["interventional@0.9"]["0"][
        "pseudo_miou"]["n"] == 2


def test_file_lock_is_exclusive(tmp_path):
    import threading
    import time

    from causal_wsss.io import file_lock

    order = []
    held = threading.Event()

    def first() -> None:
        with file_lock(tmp_path / "x.lock"):
            held.set()
            time.sleep(0.3)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    with file_lock(tmp_path / "x.lock"):  # waits for the other holder
        order.append("second in")
    t.join()
    assert order == ["first out", "second in"]
