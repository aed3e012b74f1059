"""scripts/conta_evidence.py: paired differences, the comparison of variants, sharing round 0."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import conta_evidence  # noqa: E402

from causal_wsss.config import resolve  # noqa: E402


def _report(seed, values):
    keys = conta_evidence.KEYS
    return {"dataset": "voc", "preset": "cpu", "seed": seed,
            "rounds": [{"round": r, **{k: v for k in keys}} for r, v in enumerate(values)]}


def test_paired_deltas_are_per_seed_differences_to_round_0(tmp_path):
    reports = {"0.9/0": _report(0, [30.0, 32.0, 31.0]), "0.9/1": _report(1, [40.0, 40.0, 36.0])}
    deltas = conta_evidence.paired_deltas(reports)
    mean, std, n, per_seed = deltas[0.9][1]["cam_miou_best"]
    assert per_seed == [2.0, 0.0] and mean == 1.0 and std == 1.0 and n == 2
    assert deltas[0.9][2]["seg_miou"][3] == [1.0, -4.0]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "reports.json").write_text(json.dumps(reports))
    table, drawn = conta_evidence.compare({"Eq. 3": tmp_path / "a"})
    assert "| Eq. 3 | 1 - 0 |" in table and "+1.0 ± 1.0" in table
    assert drawn["Eq. 3"][2]["pseudo_miou"][0] == -1.5
    from causal_wsss.viz import plot_paired_deltas

    assert len(plot_paired_deltas(drawn).axes) == 4


def test_reuse_round0_only_when_the_configs_allow_it(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    base = resolve("cpu", ["data.root=/d"], seed=0, rounds=2)
    (src / "round_0" / "cams").mkdir(parents=True)
    base.save(src / "config.json")
    for name in ("cam_net.pt", "cams.json", "pseudo.json", "seg.pt"):
        (src / "round_0" / name).write_text("x")
    (src / "round_0" / "cam_train.json").write_text('{"inputs": {"config": "old", "data": {}}}')
    variant = resolve("cpu", ["data.root=/d", "context.attention=uniform"], seed=0, rounds=2)
    assert conta_evidence.reuse_round0(src, dst / "a", variant) == "round 0"
    assert (dst / "a" / "round_0" / "seg.pt").is_file()
    # the copied records carry the variant's config fingerprint (the run folder checks it)
    from causal_wsss.runfolder import config_fingerprint

    record = json.loads((dst / "a" / "round_0" / "cam_train.json").read_text())
    assert record["inputs"]["config"] == config_fingerprint(variant)
    irn = resolve("cpu", ["data.root=/d", "pseudo.refine=irn"], seed=0, rounds=0)
    assert conta_evidence.reuse_round0(src, dst / "b", irn) == "round-0 CAM stages"
    copied = {p.name for p in (dst / "b" / "round_0").iterdir()}
    assert copied == {"cam_train.json", "cam_net.pt", "cams.json", "cams"}
    with pytest.raises(SystemExit, match="cam"):
        conta_evidence.reuse_round0(src, dst / "c", resolve("cpu", ["data.root=/d", "cam.epochs=3"]))


def test_shard_reads_k_of_n_and_names_a_bad_value():
    import argparse

    assert conta_evidence.parse_shard("2/3") == (2, 3)
    for bad in ("x", "0/2", "3/2", "1/2/3"):
        with pytest.raises(argparse.ArgumentTypeError, match="K/N"):
            conta_evidence.parse_shard(bad)
