# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · CONTA rounds
#
# **What you will learn**
#
# - to run the whole loop: round 0 (the baseline), then CONTA rounds that rebuild the
#   confounder dictionary from the last segmentation model and retrain with the context
#   adjustment;
# - to read the per-round table and curves: CAM, pseudo-mask and segmentation mIoU, and how much
#   of each CAM leaks onto context and co-occurring objects;
# - to compare baseline and de-confounded CAMs on the same images (widget);
# - how large the gains are against seed-to-seed noise, over several confounding strengths `rho`.
#
# **Before this:** [06 · The confounder dictionary](06_confounder_dictionary.ipynb) (what one
# CONTA round adds to the baseline of notebooks 03-05). Prerequisites: PyTorch and convolutional
# networks, as from notebook 03 on; a mean and a standard deviation over seeds.
#
# **Run time and hardware:** the `cpu` preset with `rounds=2`, three rounds of a few minutes
# each on 2 CPU cores, no GPU, from scratch; after notebooks 03-06 (rounds 0 and 1 cached in
# `../runs/course_r0`) only round 2 remains (the README's course table). The protocol over seeds and `rho`
# runs outside the notebook (hours on a CPU); section 4 reads its committed tables. In smoke
# mode (tests) under 90 s, on tiny images in a temporary folder, with one CONTA round.

# %% tags=["parameters"]
import os
import tempfile

SMOKE = os.environ.get("CAUSAL_WSSS_SMOKE", "0") == "1"  # tests: small sizes, temp folders
SEED = 0
RHO = 0.9  # confounding strength of the benchmark (notebook 02)
PRESET = "smoke" if SMOKE else "cpu"
ROUNDS = 1 if SMOKE else 2  # CONTA rounds after round 0 (the paper uses 3)
OVERRIDES = (["seg.iterations=4", "cam_infer.scales=1.0", "cam_infer.sweep=0.05,0.6,0.05"]
             if SMOKE else [])  # key=value overrides, as on the command line
N_TRAIN = 16 if SMOKE else 400  # 400 / 100 / 280 px: the benchmark of notebook 02 and `causal-wsss demo --full`
N_VAL = 4 if SMOKE else 100
SIZE = 64 if SMOKE else 280
TWINS = 2 if SMOKE else 20  # validation images with do(context) twins (the benchmark of notebook 02)
N_SHOWN = 4 if SMOKE else 8  # columns (image, class) in the CAM comparison
PROGRESS = not SMOKE
WORK_DIR = tempfile.mkdtemp(prefix="causal_wsss_07_")  # all output in smoke mode
SYNTH_DIR = f"{WORK_DIR}/synth" if SMOKE else "../data/synth"
RUN_DIR = f"{WORK_DIR}/run" if SMOKE else "../runs/course_r0"  # the run of notebooks 03-06
FIGURES_DIR = f"{WORK_DIR}/figures" if SMOKE else "../figures"

# %%

import matplotlib.pyplot as plt

from causal_wsss.course import run_benchmark
from causal_wsss.evidence_tables import findings, markdown_tables, per_seed_table, published
from causal_wsss.report import format_report_table
from causal_wsss.stages.datasets import load_datasets
from causal_wsss.viz import (
    pair_columns,
    plot_cam_grid,
    plot_evidence_arms,
    plot_evidence_sweep,
    plot_rounds,
    save_figure,
)
from causal_wsss.widgets import CamRoundsExplorer

# %% [markdown]
# ## 1. The loop
#
# One CONTA round (Fig. 4 of the paper, `causal_wsss.pipeline.run_round`):
#
# 0. (rounds $\ge 1$) build the dictionary $C$ and prior $P(c)$ from the previous round's
#    segmentation predictions on the training images (notebook 06);
# 1. train the CAM classifier, with $m$ of Eq. 3 concatenated to its last features;
# 2. multi-scale + flip CAMs, scored against the ground truth (mIoU at the fixed background
#    threshold 0.15 and at the best threshold of a sweep; leakage);
# 3. pseudo-masks from the CAMs, and their mIoU;
# 4. train the segmentation model on the pseudo-masks, score it on `val`, and predict the
#    training images for the next round.
#
# Round 0 is the same without step 0 and without $m$: the baseline. Every network is retrained
# from its initialisation in every round, so a round differs from round 0 only by the context
# channel. The paper runs $T = 3$ rounds; the `cpu` preset stops at 2.

# %%
# the benchmark of notebook 02 and the run of notebooks 03-06, continued to ROUNDS rounds
benchmark = dict(synth_dir=SYNTH_DIR, rho=RHO, seed=SEED, n_train=N_TRAIN, n_val=N_VAL,
                 size=SIZE, twins=TWINS, rounds=ROUNDS, overrides=OVERRIDES)
cfg, report = run_benchmark(RUN_DIR, PRESET, progress=PROGRESS, **benchmark)
print(format_report_table(report))

# %% [markdown]
# Columns: CAM mIoU at the fixed threshold and at the best one of the sweep (with that
# threshold), pseudo-mask mIoU (training images), segmentation mIoU (`val`), then the share of
# CAM mass outside the object: in total, on co-occurring objects, on the background (the
# context). All mIoU in percent, over the labels the data set uses (seven on this benchmark:
# background and six classes; notebook 03 defines IoU and mIoU).
#
# ## 2. Round by round

# %%
fig = plot_rounds(report)
save_figure(fig, f"{FIGURES_DIR}/07_conta_rounds_curves.png")
plt.show()
for entry in report["rounds"][1:]:
    print(f"round {entry['round']}: mean |w_M| = {entry['context_weight_mean_abs']:.4f} "
          f"({entry['context_weight_vs_feature_weight']:.2f}x the mean feature weight); the context "
          f"term is {100 * entry['context_share']:.2f}% of the positive classes' CAM magnitude")

# %% [markdown]
# The last lines are the classifier's weight on the context channel $m$ after training and the
# share of the CAMs that channel makes (notebook 06, section 5), measured on one training batch:
# how much room the adjustment had to act at all.
#
# ## 3. Baseline and de-confounded CAMs on the same images
#
# The CAMs of every round are cached (`round_k/cams/`). The columns are images holding one of
# the benchmark's co-occurring pairs (a horse and its rider, a boat and a person), each shown
# twice, with the CAM of each class of the pair (`viz.pair_columns`): there the baseline's CAM
# is expected to spread onto the partner. The last row is CONTA's CAM minus the baseline's, on
# a diverging scale set by the largest difference in the row (its colour bar): where the two
# CAM rows look alike, it says by how much they differ.

# %%
eval_ds = load_datasets(cfg)["eval"]
columns = pair_columns(eval_ds, N_SHOWN)  # (image, class), the pair images first
rounds = [e["round"] for e in report["rounds"]]
explorer = CamRoundsExplorer.from_run(RUN_DIR, eval_ds, columns, rounds)
arrays = explorer.arrays
base, last = arrays["cams"][0], arrays["cams"][rounds[-1]]
fig = plot_cam_grid(arrays["images"], {"baseline (round 0)": base,
                                       f"CONTA (round {rounds[-1]})": last,
                                       "CONTA − baseline": [b - a for a, b in zip(base, last)]},
                    col_titles=arrays["titles"], masks=arrays["masks"], classes=eval_ds.classes,
                    diff_rows=("CONTA − baseline",))
save_figure(fig, f"{FIGURES_DIR}/07_conta_rounds_cams.png")
plt.show()

# %% [markdown]
# In our run (seed 0, torch 2.14.1) the two rows cannot be told apart: round 2 repeats round 0's
# scores to the decimal (the table of section 1), because the context channel makes about a
# millionth of the CAMs (section 2). The leaks are there to remove (the boats' CAMs spread over
# the water around them, notebook 04 measures it per class), but the adjustment does not touch
# them.
#
# Pick an image and class and the round to compare with the baseline. The leakage in each title is the
# share of that CAM's mass outside its object (the report's columns average it over all images
# and classes).

# %%
explorer.widget()

# %% [markdown]
# ## 4. Is the difference real? The pre-registered protocol
#
# One run per setting says little: a tiny change early in training sends SGD down another path,
# and CAM mIoU moves by a point or more from seed to seed, more than the gains the paper
# reports. The fair comparison is **paired**: same data, same seed, **and the same initial
# weights**. Every round seeds its networks from the run's seed and the stage name only
# (`causal_wsss.runtime.stage_seed`), and the CONTA classifier starts from the baseline's head
# with the weight of the M channel at zero. So round $t$ minus round 0 of one seed is caused by
# the context channel alone, and its spread over seeds is the noise a gain has to beat.
#
# The protocol of
# [docs/results.md §0](../docs/results.md#0-the-powered-evidence-protocol-written-2026-12-01-before-any-of-its-runs)
# was written before any of its runs. It fixes the data per `rho`, varies the training seed
# (8 at rho 0.9, 5 elsewhere), names **one primary endpoint** (pseudo-mask mIoU, round 1 −
# round 0; a gain counts only if its 95% interval excludes 0) and compares CONTA with:
#
# - the **interventional** baseline: the same network trained where the context does not
#   depend on the class, then evaluated on the confounded images. It is the upper bound of
#   what removing the confounding can give, and shows how large the gap is;
# - **controls and variants** of round 1, each paired with the same round 0: the
#   uniform-attention control (one fixed $m$ for every image: the channel without the
#   intervention), $m$ divided by its maximum, the context parameters under AdamW at a learning
#   rate of their own, the **exact backdoor sum** at the head (our addition:
#   $\sum_c P(Y \mid X, m=c)\,P(c)$, which Eq. 3's NWGM approximates, so the two separate a
#   failure of the approximation from a failure of the idea) and a ground-truth dictionary;
# - a sweep over `rho`, with the share of the confounded-to-interventional gap CONTA closes.
#
# One command runs all of it, resumably (about 7 hours on 2 CPU cores); one seed of one row
# takes minutes:
#
# ```bash
# nohup .venv/bin/python scripts/conta_evidence.py --protocol --out runs/evidence --publish \
#     > runs/evidence.log 2>&1 &
# .venv/bin/python scripts/conta_evidence.py --protocol --only exact --seeds 0 --out runs/evidence
# ```
#
# The cell below reads the committed tables (`docs/tables/evidence.json`, made from every
# finished run by `--publish`): each entry is a paired difference over seeds, mean $\pm$ sample
# SD [95% t interval] (n seeds); "pending" marks arms not finished when the tables were
# committed. The first figure shows every arm's paired differences seed by seed (dots) with
# their mean and interval; the second the sweep over `rho`.

# %%
evidence = published()
if evidence is None:
    print("no docs/tables/evidence.json here (an installed package without the repository): "
          "run the protocol above")
else:
    print(markdown_tables(evidence).split("**Levels")[0])
    print("Primary endpoint per seed:\n" + per_seed_table(evidence))
    fig = plot_evidence_arms(evidence)
    save_figure(fig, f"{FIGURES_DIR}/07_conta_evidence_arms.png")
    plt.show()
    if evidence["sweep"]:
        fig = plot_evidence_sweep(evidence)
        save_figure(fig, f"{FIGURES_DIR}/07_conta_evidence_rho.png")
        plt.show()

# %% [markdown]
# ## 5. What to expect, honestly
#
# - **The paper's gains are small.** The published PASCAL VOC numbers, as collected in
#   [docs/method.md §6](../docs/method.md#6-headline-results) with their sources (mIoU %; CAM
#   and pseudo-mask on `train`, segmentation on `val`):
#
#   | method | CAM | pseudo-mask | seg val | source, as tagged there |
#   |---|---|---|---|---|
#   | IRNet | 48.3 | 66.5 | 63.5 | verified in secondary sources [V-issue/2nd] |
#   | IRNet + CONTA | 48.8 | 67.9 | ≈65.3 | recalled, not checked [U] |
#   | SEAM | 55.4 | 63.6 | 64.5 | verified [V] |
#   | SEAM + CONTA | 56.2 | 65.4 | 66.1 | seg verified in secondary tables [V-2nd]; CAM and mask [U] |
#
#   So CONTA adds +0.5 CAM, +1.4 pseudo-mask and about +1.8 segmentation mIoU to IRNet, and
#   +0.8, +1.8 and +1.6 to SEAM. Only SEAM's segmentation gain (64.5 to 66.1) rests on two
#   verified numbers; the IRNet + CONTA row is unverified. IRNet's own CAM result reproduces
#   anywhere between 48.1 and 48.6 against the published 48.3 (the spread between IRNet
#   reproductions, [docs/method.md §7](../docs/method.md#7-pitfalls-from-issues-and-ambiguities-with-recommended-resolutions),
#   pitfall 4): the gains are of the size of the reproduction noise.
# - **Judge ours the same way.** A difference between round 0 and round $T$ counts only if it
#   is larger than the spread over seeds of the same round, and keeps its sign over seeds and
#   over `rho`. Read the intervals of section 4 before the means; with one seed there is no
#   spread to compare with, and no conclusion.
#
# What the protocol found, read from the committed tables (`evidence_tables.findings`):

# %%
if evidence is not None:
    print("\n".join(findings(evidence)))

# %% [markdown]
# - **What the protocol found.** The first line is the pre-registered primary endpoint (rho
#   0.9, eight seeds): its interval is narrow and contains 0, far smaller than the paper's
#   pseudo-mask gain above. It is not that there was nothing to gain: the **interventional**
#   baseline, the same network trained where context does not depend on the class and
#   evaluated on the same images, gains the second line in every seed, and its context effect
#   and context-only false positives fall (the fourth and fifth lines). CONTA closes none of
#   that gap (the third line): its context weight stays tiny, its attention stays at the
#   uniform value, and the M term is a vanishing share of the CAMs (the channel's line).
#   Round 1 is round 0.
# - **Not the approximation, not the optimiser, not the dictionary** (section 4's table, five
#   seeds each): the exact backdoor sum in place of Eq. 3's NWGM, the context parameters under
#   AdamW at a learning rate of their own (which makes the attention collapse onto one entry),
#   a ground-truth dictionary and $m$ scaled to its maximum all stay within a tenth of a point
#   of CONTA; the uniform-attention control equals Eq. 3's round 1 in every seed, and round 2
#   repeats it. With a channel this weak, the exact sum and its approximation are both the
#   baseline.
# - **Not one confounding strength** (the last lines, one per rho): the stronger the
#   confounding, the larger the interventional gap and the confounded network's context
#   effect, and CONTA's round-1 gain stays within a tenth of a point of 0 at every rho.
#
# ### Why CONTA does nothing here
#
# Three reasons, each one you can check from what this notebook and 06 print:
#
# - **(a) A map that is the same for every image can only be a per-class bias.** m enters as
#   one channel after the trunk, and the classifier reads it through global average pooling:
#   class $k$'s logit gains $w_{M,k} \cdot \mathrm{GAP}(m)$. Notebook 06 showed that $m$ varies
#   across images by a fraction of a percent of its mean, so $\mathrm{GAP}(m)$ is one number,
#   nearly the same for every image, and $w_{M,k}\,\mathrm{GAP}(m)$ is a bias per class. The
#   features already supply any bias the loss wants (a feature that is on in every image), so
#   the loss has no reason to grow $w_M$; and while $w_M$ is small, the gradient that reaches
#   $W_1$, $W_2$ through $m$ is multiplied by it and the attention stays where it started.
# - **(b) Training stays on observational data.** The backdoor sum replaces $P(Y \mid X)$ by
#   $\sum_c P(Y \mid X, c)\,P(c)$, but the network is still fitted on images where the horse is
#   on grass 90% of the time: nothing in the loss reweights $P(c \mid x)$ towards $P(c)$. The
#   interventional baseline does exactly that, by construction of its data, and it is the one
#   that loses its context reliance (section 4).
# - **(c) In an image the context is pixels of X.** Notebook 01's simulator keeps the image
#   content $X$ and the context $C$ as separate variables, so adjusting for $C$ is possible. In
#   a photograph the grass *is* part of $X$: the trunk sees it, and a classifier that leans on
#   it needs no confounder channel to do so. CONTA's dictionary holds where objects tend to be
#   (class-average masks), not what the context looks like, so it cannot describe what the
#   network leans on.
#
# What this null rules out, and what it does not: on this benchmark, with this preset and
# schedule (an ImageNet MobileNetV2 fine-tuned for 2 epochs on 280 px images), CONTA as
# specified, and every variant of section 4, does not change the pseudo-masks. It does not
# say that CONTA does nothing on PASCAL VOC with IRNet's ResNet-50 and its schedule; it says
# that the mechanism the paper describes needs something this setting lacks, and points at
# (a)-(c) as the places to look. `docs/results.md` section 7 tests interventions built on
# them: re-composing objects onto other contexts (against (b) and (c)), context alone as
# unlabelled images (against (c)) and a dictionary of the context's appearance (against (a)),
# each available as `context.intervention=...`.
#
# ## Exercises
#
# **Exercise 1.** A paired difference and its interval. For each seed, the gain of round 1 over
# round 0 is $d_s = \text{mIoU}_{1,s} - \text{mIoU}_{0,s}$ (same data, same initial weights).
# With $n$ seeds, the 95% interval of the mean gain is
# $\bar d \pm t_{0.975,\,n-1}\, s_d / \sqrt{n}$, with $s_d$ the **sample** standard deviation.
# Compute it by hand for the primary endpoint from the per-seed differences of section 4
# (`evidence["paired"]["conta@0.9"]["1"]["pseudo_miou"]["values"]`) and check it against the
# table. Then use only the first two seeds: what does an interval from two seeds tell you?
#
# **Exercise 2 (predict, then check).** After one epoch of round 1, the log prints the mean
# $|w_M|$ and the mean largest $\alpha$ (`round_1/cam_train.json`, `history`). Before looking:
# if $|w_M|$ is about $10^{-3}$ of the feature weights and the largest $\alpha$ is within 0.01 of
# $1/n$, can round 1's CAMs differ from round 0's by more than the rounding of the CAM cache?
# Write down your prediction and the product that decides it, then compare the two rounds'
# pseudo-mask mIoU in section 2's table.
#
# <details><summary>Solution 2 (click to unfold)</summary>
#
# The context term of a CAM is $w_{M,k}\,m$ against $\sum_c W_{k,c} F_c$ over hundreds of
# feature channels: with $|w_M|$ a thousandth of a feature weight and $m$ at most $\max_i
# P(c_i)$, it is of order $10^{-6}$ of the CAM (section 2 prints `context_share`), far below the
# float16 rounding of the CAM cache ($10^{-3}$ relative). And with $\alpha$ uniform, $m$ is the
# same map for every image, so even a larger $w_M$ would shift every image's CAMs alike. The
# prediction: no difference beyond a few hundredths of a point, which is what the table shows.
# </details>

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 1: the per-seed paired differences, their mean and t interval, against the table's.
# With two seeds the t quantile is 12.7: the interval is about 9 standard errors wide on each
# side, so two seeds can rule out almost nothing.
import numpy as np
from scipy import stats  # installed with dowhy, a dependency of the package


def paired_interval(diffs, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and the two ends of its t interval."""
    d = np.asarray(diffs, float)
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


if evidence is None:
    print("no committed tables: run the protocol of section 4 first")
else:
    primary = evidence["paired"]["conta@0.9"]["1"]["pseudo_miou"]
    mean, low, high = paired_interval(primary["values"])
    print(f"{primary['n']} seeds: {mean:+.3f} [{low:+.3f}, {high:+.3f}]; the table: "
          f"{primary['mean']:+.3f} [{primary['lo']:+.3f}, {primary['hi']:+.3f}]")
    assert np.isclose(low, primary["lo"]) and np.isclose(high, primary["hi"])
    mean, low, high = paired_interval(primary["values"][:2])
    print(f"first two seeds only: {mean:+.3f} [{low:+.3f}, {high:+.3f}]")

# %% [markdown]
# ## What we saw
#
# - The baseline's and the last round's CAMs on the same images (the figure of section 3) are
#   the first thing to look at; the per-seed paired differences are what decides.
# - The CONTA loop alternates the dictionary (from the last segmentation model) and a retrained,
#   context-adjusted classifier; each round is a full pipeline run, cached and resumable.
# - Per round we measure CAM, pseudo-mask and segmentation mIoU and the leakage of the CAMs onto
#   context and co-occurring objects; the widget shows the same images before and after.
# - The expected gains (+0.5 to +1.8 mIoU in the paper) are of the size of seed noise: only
#   paired differences over many seeds, on fixed data, with the primary endpoint named in
#   advance, can tell them apart. On our benchmark the faithful adjustment gains nothing (the
#   primary endpoint printed in section 4), while training on interventional data gains several
#   points: the confounding costs something, and Eq. 3 recovers none of it, for the three reasons
#   of section 5.
#
# **Next:** interventions that do change what the network learns from the context, each
# measured against the same gap: [08 · Interventions](08_interventions.ipynb).
