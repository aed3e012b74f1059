# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
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
# CONTA round adds to the baseline of notebooks 03-05).
#
# **Run time and hardware:** the `cpu` preset with `rounds=2` takes about 15 minutes on 2 CPU
# cores, no GPU, from scratch; after notebooks 03-06 (rounds 0 and 1 cached in
# `../runs/course_r0`) only round 2 remains, about 5 minutes. The sweep over `rho` and seeds runs
# outside the notebook (hours on a CPU, section 4). In smoke mode (tests) under 90 s, on tiny
# images in a temporary folder, with one CONTA round and a two-point sweep.

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
N_TRAIN = 16 if SMOKE else 400  # 400 / 100 / 280 px: the benchmark of `make demo` and notebook 02
N_VAL = 4 if SMOKE else 100
SIZE = 64 if SMOKE else 280
TWINS = 2 if SMOKE else 20  # validation images with do(context) twins (the benchmark of `make demo`)
N_SHOWN = 4 if SMOKE else 8  # images in the CAM comparison
SWEEP_RHOS = (0.5,) if SMOKE else ()  # extra rho values run here; the full sweep is a script
PROGRESS = not SMOKE
WORK_DIR = tempfile.mkdtemp(prefix="causal_wsss_07_")  # all output in smoke mode
SYNTH_DIR = f"{WORK_DIR}/synth" if SMOKE else "../data/synth"
RUN_DIR = f"{WORK_DIR}/run" if SMOKE else "../runs/course_r0"  # the run of notebooks 03-06
EVIDENCE_DIR = f"{WORK_DIR}/evidence" if SMOKE else "../runs/evidence"
CONTROL_DIRS = ({"uniform control": f"{WORK_DIR}/ev_uniform"} if SMOKE else  # variants to compare
                {"uniform control": "../runs/ev_uniform", "m_scale=max": "../runs/ev_mmax",
                 "ground-truth masks": "../runs/ev_gt"})
FIGURES_DIR = f"{WORK_DIR}/figures" if SMOKE else "../figures"

# %%
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt

from causal_wsss.config import resolve
from causal_wsss.data.synthetic import SPEC, generate_synthetic
from causal_wsss.io import write_json
from causal_wsss.pipeline import format_report_table, load_datasets, run_experiment
from causal_wsss.viz import (
    plot_cam_grid,
    plot_evidence,
    plot_paired_deltas,
    plot_rho_sweep,
    plot_rounds,
    save_figure,
)
from causal_wsss.widgets import CamRoundsExplorer

sys.path.insert(0, str(Path("../scripts").resolve()))
import conta_evidence  # scripts/conta_evidence.py: the sweep over seeds and rho

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
generate_synthetic(SYNTH_DIR, n_train=N_TRAIN, n_val=N_VAL, rho=RHO, seed=SEED, size=SIZE,
                   twins=TWINS, progress=PROGRESS)
cfg = resolve(PRESET, [f"data.root={SYNTH_DIR}", "data.dataset=synthetic", *OVERRIDES],
              seed=SEED, rounds=ROUNDS)
report = run_experiment(cfg, RUN_DIR, progress=PROGRESS)
print(format_report_table(report))

# %% [markdown]
# Columns: CAM mIoU at the fixed threshold and at the best one of the sweep (with that
# threshold), pseudo-mask mIoU (training images), segmentation mIoU (`val`), then the share of
# CAM mass outside the object: in total, on co-occurring objects, on the background (the
# context). All mIoU in percent over 21 labels, of which this benchmark uses seven.
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
# The CAMs of every round are cached (`round_k/cams/`). We show each image's first class; images
# holding one of the benchmark's co-occurring pairs (horse and rider, boat and person) come
# first, because there the baseline's CAM is expected to spread onto the partner.

# %%
eval_ds = load_datasets(cfg)["eval"]
pair_cols = [(eval_ds.classes.index(a) - 1, eval_ds.classes.index(b) - 1) for a, b in SPEC.pairs]
paired = [n for n, row in zip(eval_ds.names, eval_ds.label_matrix())
          if any(row[a] and row[b] for a, b in pair_cols)]
names = (paired + [n for n in eval_ds.names if n not in set(paired)])[:N_SHOWN]
rounds = [e["round"] for e in report["rounds"]]
explorer = CamRoundsExplorer.from_run(RUN_DIR, eval_ds, names, rounds)
arrays = explorer.arrays
fig = plot_cam_grid(arrays["images"], {"baseline (round 0)": arrays["cams"][0],
                                       f"CONTA (round {rounds[-1]})": arrays["cams"][rounds[-1]]},
                    col_titles=arrays["titles"], masks=arrays["masks"])
save_figure(fig, f"{FIGURES_DIR}/07_conta_rounds_cams.png")
plt.show()

# %% [markdown]
# Pick an image and the round to compare with the baseline. The leakage in each title is the
# share of that CAM's mass outside its object (the report's columns average it over all images
# and classes).

# %%
explorer.widget()

# %% [markdown]
# ## 4. Is the difference real? Confounding strength and seeds
#
# One run per setting says little: on this benchmark the seed-to-seed spread of CAM mIoU is
# several points (`docs/results.md`; an independent CPU prototype saw ±4-5), larger than the
# gains the paper reports. The script
# `scripts/conta_evidence.py` runs round 0 and the CONTA rounds for every (rho, seed), caches
# each run, and tabulates mean $\pm$ std over seeds. From the repository root:
#
# ```bash
# .venv/bin/python scripts/conta_evidence.py --out runs/evidence --rhos 0.5 0.7 0.9 0.97 \
#     --seeds 0 1 2 --rounds 2 --figure figures/07_conta_rounds_evidence.png
# ```
#
# That is 12 runs of about 10 minutes each on 2 idle CPU cores (rerun it to resume). This notebook
# reads its `reports.json` when present; otherwise it shows the run above, plus (in smoke mode)
# one more `rho` on the same tiny setting.

# %%
reports = {f"{RHO}/{SEED}": report}
saved = Path(EVIDENCE_DIR) / "reports.json"
if saved.is_file():
    reports = json.loads(saved.read_text())
    print(f"read {len(reports)} runs from {saved}")
for rho in SWEEP_RHOS:
    data = f"{EVIDENCE_DIR}/data/rho{rho}_seed{SEED}"
    generate_synthetic(data, n_train=N_TRAIN, n_val=N_VAL, rho=rho, seed=SEED, size=SIZE)
    cfg_rho = resolve(PRESET, [f"data.root={data}", "data.dataset=synthetic", *OVERRIDES],
                      seed=SEED, rounds=ROUNDS)
    reports[f"{rho}/{SEED}"] = run_experiment(cfg_rho, f"{EVIDENCE_DIR}/rho{rho}_seed{SEED}",
                                              progress=PROGRESS)
summary = conta_evidence.summarise(reports)
print(conta_evidence.markdown(summary))

# %%
fig = plot_evidence(summary)
save_figure(fig, f"{FIGURES_DIR}/07_conta_rounds_evidence.png")
plt.show()
fig = plot_rho_sweep(summary)  # the same numbers against rho: what confounding costs
save_figure(fig, f"{FIGURES_DIR}/07_conta_rounds_rho_sweep.png")
plt.show()

# %% [markdown]
# The fair comparison is paired: same rho, same seed, same data, **and the same initial
# weights**. Every round seeds its networks from the run's seed and the stage name only
# (`causal_wsss.runtime.stage_seed`), and the CONTA classifier starts from the baseline's head
# with the weight of the M channel at zero. So round $t$ minus round 0 of one seed is caused by
# the context channel alone, and its spread over seeds is the noise a gain has to beat.
#
# A **control** tells what kind of cause. `context.attention=uniform` keeps the extra channel
# but gives every image the same $\alpha_i = 1/n$, so $m$ is one fixed map: a learnable,
# class-specific spatial bias with no image-specific context. If CONTA's differences are no
# larger than the control's, the image-specific attention of Eq. 3 is not what caused them.
# The variants come from the same script (`--reuse` shares round 0):
#
# ```bash
# .venv/bin/python scripts/conta_evidence.py --out runs/ev_uniform --reuse runs/evidence \
#     --rhos 0.9 --seeds 0 1 2 --rounds 2 context.attention=uniform
# .venv/bin/python scripts/conta_evidence.py --compare "Eq. 3 (CONTA)=runs/evidence" \
#     "uniform control=runs/ev_uniform" --figure figures/07_conta_rounds_paired.png
# ```
#
# Dots below are seeds, bars their mean; in smoke mode one tiny control run stands in.

# %%
if SMOKE:  # stand-ins for the script's folders: this notebook's runs
    write_json(f"{EVIDENCE_DIR}/reports.json", reports)
    cfg_u = resolve(PRESET, [f"data.root={SYNTH_DIR}", "data.dataset=synthetic", *OVERRIDES,
                             "context.attention=uniform"], seed=SEED, rounds=ROUNDS)
    control = run_experiment(cfg_u, f"{CONTROL_DIRS['uniform control']}/run", progress=PROGRESS)
    write_json(f"{CONTROL_DIRS['uniform control']}/reports.json", {f"{RHO}/{SEED}": control})
variants = {"Eq. 3 (CONTA)": Path(EVIDENCE_DIR)}
variants.update({label: Path(folder) for label, folder in CONTROL_DIRS.items()
                 if (Path(folder) / "reports.json").is_file()})
if (Path(EVIDENCE_DIR) / "reports.json").is_file():
    table, deltas = conta_evidence.compare(variants, RHO)
    print(table)
    fig = plot_paired_deltas(deltas)
    save_figure(fig, f"{FIGURES_DIR}/07_conta_rounds_paired.png")
    plt.show()
else:
    print(f"no {EVIDENCE_DIR}/reports.json yet: run scripts/conta_evidence.py (above)")

# %% [markdown]
# ## 5. What to expect, honestly
#
# - **The paper's gains are small.** For IRNet + CONTA on VOC the recalled numbers are about
#   +0.5 CAM mIoU, +1.4 pseudo-mask and +1.8 segmentation mIoU (SEAM + CONTA: +0.8, +1.8, +1.6;
#   `docs/method.md` section 6, mostly unverified). IRNet's own CAM result reproduces anywhere
#   between 48.1 and 48.6 against the published 48.3: the gain is of the size of the
#   reproduction noise.
# - **Judge ours the same way.** A difference between round 0 and round $T$ counts only if it
#   is larger than the spread over seeds of the same round, and keeps its sign over seeds and
#   over `rho`. Read the $\pm$ columns above before the means; with one seed there is no spread
#   to compare with, and no conclusion.
# - **What we measured** (`docs/results.md`, `cpu` preset, `rho` = 0.9, seeds 0-2, paired
#   rounds). The faithful adjustment changed CAM mIoU at the best threshold by +0.1 $\pm$ 2.7
#   (round 1) and -1.2 $\pm$ 2.3 (round 2) points, pseudo-masks by -0.8 $\pm$ 2.4 and
#   -1.6 $\pm$ 1.7, and left the leakage where it was. The uniform control (one fixed $m$ for
#   every image) did no worse: +0.9 $\pm$ 3.3 and -0.4 $\pm$ 2.5. The per-seed signs agree
#   between CONTA and the control (seeds 0 and 1 gain, seed 2 loses about 4 points), so they
#   come from the baseline run's own luck, not from context: the seed with the best baseline
#   loses whatever is changed. One seed's table (like `make demo`'s) can therefore show a gain
#   of several points, or a loss, while the context term is 0.02% of the CAMs.
# - **The options did not change that** (`docs/results.md` section 3, round 1, three seeds): a
#   uniform prior, a one-hot query and cosine attention repeat the same per-seed pattern.
#   Max-scaling $m$ gained in all three seeds in round 1 (CAM +1.1 $\pm$ 0.3, segmentation
#   +1.9 $\pm$ 0.9) but not in round 2, and its uniform-attention control was not separable from
#   it. Even a dictionary and queries built from the **ground-truth** masks (an upper bound, not
#   weak supervision) gave only +0.6 $\pm$ 0.3 CAM mIoU, with the leakage unchanged.
# - **Why the effect can be small.** The adjustment acts through one extra channel whose input
#   $m$ is nearly the same map for every image and whose weight the classifier learns freely
#   (notebook 06): nothing forces the classifier to use it, and nothing in it removes the
#   features that see the rider when predicting "horse".
# - **What would convince.** A leakage on co-occurring objects that drops as `rho` grows, for
#   CONTA and not for the baseline, over several seeds; or gains that survive the `gpu` preset
#   on VOC.
#
# ## What we saw
#
# - The CONTA loop alternates the dictionary (from the last segmentation model) and a retrained,
#   context-adjusted classifier; each round is a full pipeline run, cached and resumable.
# - Per round we measure CAM, pseudo-mask and segmentation mIoU and the leakage of the CAMs onto
#   context and co-occurring objects; the widget shows the same images before and after.
# - The expected gains (+0.5 to +1.8 mIoU in the paper) are of the size of seed noise: only
#   means and paired differences over seeds and several `rho` can tell them apart. On our
#   benchmark, over three seeds, the faithful adjustment gains nothing, and a control without
#   image-specific context does as well: the attention collapses onto one class, and the context
#   channel makes a few hundredths of a percent of the CAMs (notebook 06).
#
# **Next:** the same loop at full scale on a GPU, with IRNet's recipe and DeepLab-v2:
# [08 · Full PASCAL VOC 2012 experiment](08_pascal_voc.ipynb), then
# [09 · Full MS-COCO 2014 experiment](09_ms_coco.ipynb).
