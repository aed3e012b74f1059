"""The GPU run-time projection of notebooks 09 and 10: its rates agree with the measurements
recorded in docs/benchmarks.md, and its arithmetic is the work divided by the rate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from causal_wsss.config import resolve
from causal_wsss.results import (
    GPU_STAGE_RATES,
    gpu_projection_table,
    gpu_round_projection,
    projection_hours,
)

BENCHMARKS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def _h200_rates() -> dict[str, float]:
    """Per-second rates of the H200 end-to-end table of docs/benchmarks.md, by stage."""
    text = BENCHMARKS.read_text()
    section = text[text.index("## The `gpu` preset end to end on one H200"):]
    rates = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and re.match(r"[a-z_]+ \(", cells[0]):
            number = re.match(r"(\d+(?:\.\d+)?)", cells[3])
            if number:
                rates[cells[0].split()[0]] = float(number.group(1))
    return rates


def test_every_measured_rate_is_the_one_recorded_in_the_benchmarks():
    recorded = _h200_rates()
    assert {"cam_train", "cams", "irn_train", "pseudo", "seg_train", "seg_predict"} <= set(recorded)
    for stage, info in GPU_STAGE_RATES.items():
        if "estimate" in info["source"]:
            continue  # not a measurement: nothing to find in the benchmarks
        assert info["rate"][0] == recorded[stage], stage
    # the CAMs' fast end: the batched multi-scale CAMs at repeated VOC sizes on the H200
    text = BENCHMARKS.read_text()
    batched = text[text.index("## Batched multi-scale + flip CAMs"):].split("### On one NVIDIA H200")[1]
    fast = GPU_STAGE_RATES["cams"]["rate"][1]
    assert re.search(rf"\b{fast:.0f}(\.\d)? \(\*\*", batched), fast


def test_projection_is_work_over_rate_and_sums_to_the_round():
    cfg = resolve("paper")
    rows = gpu_round_projection(1000, 100, cam_epochs=cfg.cam.epochs,
                                irn_epochs=cfg.pseudo.irn_epochs, seg_iterations=200,
                                seg_batch=cfg.seg.batch_size)
    by_stage = {r["stage"]: r for r in rows}
    assert set(by_stage) == set(GPU_STAGE_RATES)
    slow, fast = GPU_STAGE_RATES["cam_train"]["rate"]
    assert by_stage["cam_train"]["minutes"] == pytest.approx(
        (cfg.cam.epochs * 1000 / fast / 60, cfg.cam.epochs * 1000 / slow / 60))
    slow, fast = GPU_STAGE_RATES["seg_train"]["rate"]
    assert by_stage["seg_train"]["minutes"][1] == pytest.approx(200 * cfg.seg.batch_size / slow / 60)
    slow, fast = GPU_STAGE_RATES["seg_predict"]["rate"]
    assert by_stage["seg_predict"]["minutes"][0] == pytest.approx(1100 / fast / 60)
    low, high = projection_hours(rows, rounds=4)
    assert low == pytest.approx(4 * sum(r["minutes"][0] for r in rows) / 60)
    assert high == pytest.approx(4 * sum(r["minutes"][1] for r in rows) / 60)
    assert low < high
    table = gpu_projection_table(rows)
    assert list(table.index) == [*GPU_STAGE_RATES, "round"]


def test_projection_refuses_negative_counts():
    with pytest.raises(ValueError, match=">= 0"):
        gpu_round_projection(-1, 10, cam_epochs=1, irn_epochs=1, seg_iterations=1, seg_batch=1)
