"""IRNet's protocol carried to other sizes (issue 14): the ground-truth-boundary diagnostic, the
walk scaled to the grid, boundary training counted in SGD steps, the cpu preset's IRN keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from causal_wsss.config import (
    IRNET_IRN_STEPS,
    IRNET_WALK_REACH,
    PseudoConfig,
    config_differences,
    resolve,
    walk_step_spread,
)
from causal_wsss.errors import ConfigError
from causal_wsss.irn import (
    ground_truth_boundary,
    irn_epochs,
    oracle_walk_labels,
    perfect_cams,
    random_walk,
    walk_params,
    walk_reach_cells,
    walk_settings,
)
from causal_wsss.metrics import ConfusionMatrix

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# the ground-truth boundary: outside the objects, closed between them


def _blocks(grid: np.ndarray) -> np.ndarray:
    """A label map whose every cell of ``grid`` is a 4x4 block of pixels."""
    return np.kron(grid, np.ones((4, 4), dtype=grid.dtype))


def test_ground_truth_boundary_lies_outside_an_object_on_the_image_border():
    grid = np.zeros((6, 7), np.uint8)
    grid[0:3, 0:3] = 5  # touches the top and left borders
    boundary = ground_truth_boundary(_blocks(grid)).numpy()
    assert boundary.shape == (6, 7)
    want = np.zeros((6, 7))
    want[0:4, 3] = 1  # the background column right of the object, and the corner
    want[3, 0:4] = 1  # the background row below it
    np.testing.assert_array_equal(boundary, want)
    assert not boundary[grid == 5].any()  # no object cell is a boundary; the border is none


def test_ground_truth_boundary_between_two_touching_objects():
    grid = np.zeros((5, 8), np.uint8)
    grid[1:4, 1:4] = 3
    grid[1:4, 4:7] = 9  # touches class 3 along a column
    boundary = ground_truth_boundary(_blocks(grid)).numpy()
    assert boundary[1:4, 3].all() and not boundary[1:4, 1:3].any()  # a strip of the smaller label
    assert not boundary[grid == 9].any()
    assert boundary[0, :].all() and boundary[4, :].all()  # background rows outside both
    # every 4-connected step between two different labels meets a boundary cell
    diff_h = (grid[:, :-1] != grid[:, 1:])
    assert (boundary[:, :-1].astype(bool) | boundary[:, 1:].astype(bool))[diff_h].all()
    diff_v = (grid[:-1] != grid[1:])
    assert (boundary[:-1].astype(bool) | boundary[1:].astype(bool))[diff_v].all()
    # ignore (255) counts as background
    grid[0, 0] = 255
    np.testing.assert_array_equal(ground_truth_boundary(_blocks(grid)).numpy(), boundary)


def test_oracle_walk_keeps_touching_and_bordering_objects_whole():
    grid = np.zeros((20, 26), np.uint8)
    grid[0:8, 0:8] = 5  # on the border
    grid[9:17, 6:14] = 3
    grid[9:17, 14:22] = 9  # touches class 3
    mask = _blocks(grid)
    keys = torch.tensor([2, 4, 8])  # labels 3, 5, 9
    cfg = PseudoConfig(exp_times=6)
    walked = oracle_walk_labels(mask, keys, None, cfg, bg_threshold=0.25).numpy()
    plain = oracle_walk_labels(mask, keys, None, cfg, bg_threshold=0.25, walk=False).numpy()
    for label in (5, 9):  # whole
        inside = mask == label
        assert (walked[inside] == label).mean() > 0.97, label
        assert (walked[inside] == label).mean() >= (plain[inside] == label).mean() - 0.01
    # class 3 loses its one-cell strip along class 9 (1 of 8 columns), nothing else
    inside = mask == 3
    assert 0.85 < (walked[inside] == 3).mean() < 0.95
    lost = inside & (walked != 3)
    assert np.nonzero(lost)[1].min() >= 4 * 13 - 2
    assert (walked[mask == 0] == 0).mean() >= (plain[mask == 0] == 0).mean() - 0.01
    # the old rule (a ring on both sides of every label change) erases much more
    small = torch.as_tensor(mask[::4, ::4]).float()[None, None]
    ring = (torch.nn.functional.max_pool2d(small, 3, 1, 1)
            != -torch.nn.functional.max_pool2d(-small, 3, 1, 1))[0, 0].float()
    assert ring[torch.as_tensor(grid) == 5].sum() > 10  # object cells on the old ring


def test_perfect_cams_are_the_indicators_on_the_stride4_grid():
    mask = np.zeros((9, 10), np.uint8)
    mask[:4, :4] = 2
    mask[4:, 6:] = 7
    cams = perfect_cams(mask, torch.tensor([1, 6]))
    assert cams.shape == (2, 3, 3)
    assert cams[0, 0, 0] == 1 and cams[0, 1, 1] == 0
    assert 0 < cams[1, 1, 1] < 1  # a 4x4 block half covered: its share
    assert perfect_cams(mask, torch.tensor([], dtype=torch.int64)).shape == (0, 3, 3)


# --------------------------------------------------------------------------------------------
# the sanity check: perfect CAMs survive the walk at the benchmark's size


@pytest.fixture(scope="module")
def benchmark_images(tmp_path_factory):
    from causal_wsss.data.synthetic import generate_synthetic
    from causal_wsss.data.voc import VOCSegmentation

    root = generate_synthetic(tmp_path_factory.mktemp("synth"), n_train=6, n_val=1, rho=0.9,
                              seed=0, size=280)
    ds = VOCSegmentation(root, "train")
    return [ds.load_mask(i) for i in range(len(ds))]


@pytest.mark.parametrize("cfg", [PseudoConfig(walk_reach=IRNET_WALK_REACH),
                                 PseudoConfig()], ids=["scaled walk", "IRNet's walk"])
def test_perfect_cams_through_the_oracle_walk_match_no_walk(benchmark_images, cfg):
    """The diagnostic cannot erase what it should keep: walked perfect CAMs on ground-truth
    boundaries score within 3 points (threshold 0.25) or 5 (0.5) of the same maps without a walk
    (280 px benchmark; the old two-sided ring lost 60 points at 0.25)."""
    for threshold in (0.25, 0.5):
        walked, plain = ConfusionMatrix(21), ConfusionMatrix(21)
        for mask in benchmark_images:
            labels = np.unique(mask)
            keys = torch.tensor([int(v) - 1 for v in labels if 0 < v < 255])
            target = torch.from_numpy(mask.astype(np.int64))
            for conf, walk in ((walked, True), (plain, False)):
                out = oracle_walk_labels(mask, keys, None, cfg, bg_threshold=threshold, walk=walk)
                conf.update(out.long(), target)
        assert plain.miou() > 0.85
        # IRNet zeroes the CAMs on boundary cells: the ring just outside each object pulls
        # its edge down by up to half a cell after upsampling, which costs most at 0.5
        tolerance = 0.03 if threshold == 0.25 else 0.05
        assert walked.miou() > plain.miou() - tolerance, (threshold, walked.miou(), plain.miou())


# --------------------------------------------------------------------------------------------
# the walk scaled to the grid


def test_walk_params_reproduce_irnet_at_voc_size_and_check_their_input():
    assert walk_params((94, 125), IRNET_WALK_REACH) == (5, 8)
    assert walk_params((125, 94), IRNET_WALK_REACH) == (5, 8)
    assert abs(walk_reach_cells(5, 8) / 125 - IRNET_WALK_REACH) < 1e-12
    assert walk_step_spread(3) == pytest.approx(2 ** 0.5)  # the 5x5 square
    # the radius follows the grid: 5 on VOC's 125 cells, 3 on the benchmark's 73, 10 on 250
    assert [walk_params((n, n), IRNET_WALK_REACH)[0] for n in (24, 73, 125, 250)] == [2, 3, 5, 10]
    assert walk_params((250, 250), IRNET_WALK_REACH)[1] == 8  # radius doubled, same steps
    assert walk_settings(PseudoConfig(exp_times=7), (10, 10)) == (5, 7)
    assert walk_settings(PseudoConfig(walk_reach=IRNET_WALK_REACH), (94, 125)) == (5, 8)
    with pytest.raises(ConfigError, match="walk_reach"):
        walk_params((10, 10), 0.0)


def _measured_reach(grid_long: int, reach: float) -> float:
    """Per-axis standard deviation of the walk of a point mass, with the scaled parameters of a
    grid of long side ``grid_long``, run on a boundary-free grid three times larger."""
    radius, exp_times = walk_params((grid_long, grid_long), reach)
    side = 3 * grid_long
    delta = torch.zeros(1, side, side, dtype=torch.float64)
    delta[0, side // 2, side // 2] = 1.0
    out = random_walk(delta, torch.zeros(side, side, dtype=torch.float64), beta=10.0,
                      exp_times=exp_times, radius=radius)[0]
    xs = torch.arange(side, dtype=torch.float64) - side // 2
    mass = out.sum()
    return float(((out.sum(0) * xs ** 2).sum() / mass).sqrt())


@pytest.mark.parametrize("reach", [IRNET_WALK_REACH, 0.15])
def test_scaled_walk_reaches_the_same_fraction_of_two_grid_sizes(reach):
    fractions = []
    for long in (24, 48):
        measured = _measured_reach(long, reach)
        radius, exp_times = walk_params((long, long), reach)
        assert measured == pytest.approx(walk_reach_cells(radius, exp_times), rel=0.02)
        fractions.append(measured / long)
        assert 2 ** -0.25 - 0.02 <= measured / (reach * long) <= 2 ** 0.25 + 0.02
    assert max(fractions) / min(fractions) < 2 ** 0.5 + 0.02
    # IRNet's fixed 2^8 steps at radius 5 would reach more than half of the smaller grid
    assert walk_reach_cells(5, 8) / 24 > 1.5


# --------------------------------------------------------------------------------------------
# boundary training in SGD steps, and the cpu preset


def test_irn_epochs_count_steps_when_asked():
    assert irn_epochs(PseudoConfig(irn_epochs=3), 13) == 3
    assert irn_epochs(PseudoConfig(irn_steps=IRNET_IRN_STEPS), 331) == 3  # VOC train_aug
    assert irn_epochs(PseudoConfig(irn_steps=IRNET_IRN_STEPS), 50) == 20  # 400 images, batch 8
    assert irn_epochs(PseudoConfig(irn_steps=10), 50) == 1


def test_cpu_preset_follows_irnet_protocol_and_old_runs_stay_resumable():
    cfg = resolve("cpu", ["data.root=/d"])
    p = cfg.pseudo
    assert p.ir_crf and p.irn_steps == IRNET_IRN_STEPS and p.walk_reach == IRNET_WALK_REACH
    for name in ("paper", "gpu"):  # IRNet's numbers as they are
        q = resolve(name, ["data.root=/d"]).pseudo
        assert q.walk_reach == 0 and q.irn_steps == 0 and q.exp_times == 8 and q.ir_crf
    with pytest.raises(ConfigError, match="pseudo.walk_reach"):
        resolve("cpu", ["pseudo.walk_reach=-1"])
    with pytest.raises(ConfigError, match="pseudo.irn_steps"):
        resolve("cpu", ["pseudo.irn_steps=-1"])
    # a run folder made before the IRN keys changed: they were never used, so no difference
    old = resolve("cpu", ["data.root=/d", "pseudo.ir_crf=false", "pseudo.irn_steps=0"])
    assert config_differences(old, cfg) == []
    irn_old = resolve("cpu", ["data.root=/d", "pseudo.refine=irn", "pseudo.irn_steps=0"])
    irn_new = resolve("cpu", ["data.root=/d", "pseudo.refine=irn"])
    assert [k for k, _, _ in config_differences(irn_old, irn_new)] == ["pseudo.irn_steps"]


def test_oracle_scores_agree_with_oracle_walk_labels(benchmark_images, tmp_path):
    """The batched scorer of the script walks once per image; the numbers are those of
    :func:`oracle_walk_labels` image by image."""
    from causal_wsss.irn import oracle_scores

    class Masks:
        num_classes = 21
        names = [str(i) for i in range(2)]

        def __len__(self):
            return 2

        def load_mask(self, i):
            return benchmark_images[i]

    cfg = PseudoConfig(walk_reach=IRNET_WALK_REACH)
    got = oracle_scores(Masks(), cfg, [0.25, 0.5], progress=False)
    for t in (0.25, 0.5):
        for kind, walk in (("walk", True), ("no_walk", False)):
            conf = ConfusionMatrix(21)
            for mask in benchmark_images[:2]:
                keys = torch.tensor([int(v) - 1 for v in np.unique(mask) if 0 < v < 255])
                out = oracle_walk_labels(mask, keys, None, cfg, bg_threshold=t, walk=walk)
                conf.update(out.long(), torch.from_numpy(mask.astype(np.int64)))
            assert got[kind][t] == pytest.approx(100 * conf.compute().miou)


# --------------------------------------------------------------------------------------------
# scripts/compare_refinement.py: the IR-label statistics and the interval


def test_compare_refinement_ir_label_stats_and_interval(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import compare_refinement

    from causal_wsss.pseudo_masks import save_mask_png

    truth = np.zeros((4, 5), np.uint8)
    truth[:2, :2] = 3
    truth[3, 4] = 255  # void: not counted
    ir = np.full((4, 5), 255, np.uint8)
    ir[:2, :3] = 3  # 4 right, 2 wrong (truth background)
    ir[3, :] = 0  # 4 right background (the void pixel is not counted)
    save_mask_png(tmp_path / "a.png", ir)

    class One:
        names = ["a"]

        def load_mask(self, i):
            return truth

    stats = compare_refinement.ir_label_stats(One(), tmp_path)
    assert stats["confident_fg"] == pytest.approx(100 * 6 / 19)
    assert stats["confident_fg_correct"] == pytest.approx(100 * 4 / 6)
    assert stats["confident_bg"] == pytest.approx(100 * 4 / 19)
    assert stats["confident_bg_correct"] == 100
    assert stats["ignore"] == pytest.approx(100 * 9 / 19)
    assert stats["truth_fg"] == pytest.approx(100 * 4 / 19)
    mean, half = compare_refinement.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302652729911275 / 3 ** 0.5)
    assert np.isnan(compare_refinement.interval([5.0])[1])


def test_compare_refinement_tables_only_pairs_by_seed_and_draws_per_class(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "compare_refinement.py"
    pseudo = {"bg_threshold": 0.7, "sem_seg_bg_threshold": 0.25}
    stats = {k: 1.0 for k in ("confident_fg", "confident_fg_correct", "confident_bg",
                              "confident_bg_correct", "ignore", "truth_fg")}
    rows = [{"seed": s, "pseudo": pseudo, "ir_labels": stats, "threshold": t, "crf": c,
             "irn": i, "threshold_per_class": {"background": t, "horse": t},
             "crf_per_class": {"background": c, "horse": c},
             "irn_per_class": {"background": i, "horse": i}}
            for s, (t, c, i) in enumerate([(40.0, 50.0, 30.0), (42.0, 51.0, 33.0)])]
    (tmp_path / "scores.json").write_text(json.dumps(rows))
    out = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--tables-only",
                          "--figure", str(tmp_path / "per_class.png")],
                         capture_output=True, text=True, check=True).stdout
    assert "| threshold 0.7 + CRF − threshold 0.7 | +9.5 [" in out  # paired: +10, +9
    assert "+10.0, +9.0" in out and "−10.0" not in out
    assert "-10.0, -9.0" in out  # IRN − threshold per seed
    assert (tmp_path / "per_class.png").is_file() and (tmp_path / "table.md").is_file()
    bad = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "at least one run folder" in bad.stderr
