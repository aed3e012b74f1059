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
# # 02 · Confounding in the data
#
# **What you will learn**
#
# - how strongly classes co-occur in PASCAL VOC 2012 and MS-COCO 2014, read from the
#   image-level labels alone (when `CAUSAL_WSSS_DATA` points at your copy);
# - the project's synthetic benchmark: one parameter, `rho`, sets both confounders (each class's
#   preferred *context* and a co-occurring *partner*), and every image records its context;
# - to measure $P(\text{preferred context} \mid \text{class})$ and $P(\text{person} \mid
#   \text{horse})$ on generated images, and to watch them follow `rho` (widget).
#
# **Before this:** [01 · The causal graph](01_causal_graph.ipynb), which explains why such
# co-occurrence confounds an image-level classifier.
#
# **Run time and hardware:** under a minute on 2 CPU cores (the README's course table; under 10 s in smoke mode), plus a
# few seconds for exercise 1's check (a fresh set of small images); no GPU. It
# writes the benchmark the later notebooks and `causal-wsss demo --full` use (500 images in
# `../data/synth`; reused if present). With real data, add the time to read the labels: seconds for VOC, longer for COCO,
# whose training annotation file is large.

# %% tags=["parameters"]
import os
import tempfile

SMOKE = os.environ.get("CAUSAL_WSSS_SMOKE", "0") == "1"  # tests: small sizes, temp folders
DATA = os.environ.get("CAUSAL_WSSS_DATA", "")  # folder holding VOCdevkit/ and/or COCO's train2014/
SPLIT = "train"  # split whose labels are counted in VOC and COCO
TOP_CLASSES = 20  # classes shown in the co-occurrence heat maps (COCO has 80)
SEED = 0
RHO = 0.9  # confounding strength of the benchmark
N_TRAIN = 40 if SMOKE else 400  # 400 / 100 / 280 px: the benchmark (also `causal-wsss demo --full`'s)
N_VAL = 10 if SMOKE else 100
SIZE = 96 if SMOKE else 280
TWINS = 2 if SMOKE else 20  # validation images with do(context) twins (the benchmark of notebook 02)
WIDGET_IMAGES = 40 if SMOKE else 150  # images per rho value in the widget (96 px)
CHECK_IMAGES = 300 if SMOKE else 1500  # exercise 1: images of its check set (64 px)
PROGRESS = not SMOKE
# Paths are relative to notebooks/, the kernel's working directory; ../data is git-ignored.
WORK_DIR = tempfile.mkdtemp(prefix="causal_wsss_02_") if SMOKE else "../data/notebook02"
SYNTH_DIR = f"{WORK_DIR}/synth" if SMOKE else "../data/synth"
FIGURES_DIR = f"{WORK_DIR}/figures" if SMOKE else "../figures"

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from causal_wsss.data import build_dataset
from causal_wsss.data.scenes import SPEC
from causal_wsss.data.stats import conditional_probability, cooccurrence_stats, format_stats_table
from causal_wsss.data.synthetic import generate_synthetic, load_meta, measured_cooccurrence
from causal_wsss.errors import DataError
from causal_wsss.viz import plot_bars, plot_cooccurrence, plot_image_mask_grid, save_figure
from causal_wsss.widgets import RHO_GRID, CooccurrenceExplorer

# %% [markdown]
# ## 1. Co-occurrence in PASCAL VOC and MS-COCO
#
# The confounder $C$ of notebook 01 leaves a trace in the labels: classes that share a context
# share images. For every pair of classes we count the images whose labels hold both (VOC's
# XML annotations, COCO's instance file; no image is decoded) and report
# $P(b \mid a) = \#\{a \text{ and } b\} / \#\{a\}$.
#
# Set `CAUSAL_WSSS_DATA` to the folder holding `VOCdevkit/` (VOC) and/or COCO's `train2014/`
# and `annotations/` (directly or in a `coco/` subfolder). Without it this section is skipped;
# in smoke mode a tiny synthetic stand-in written in both layouts takes its place, so the VOC
# and COCO readers still run (its numbers are not VOC's or COCO's).

# %%
if SMOKE and not DATA:
    DATA = str(generate_synthetic(f"{WORK_DIR}/standin", n_train=24, n_val=8, rho=RHO,
                                  seed=SEED, coco=True, size=96).parents[1])
real = {}
if DATA:
    coco_root = os.path.join(DATA, "coco") if os.path.isdir(os.path.join(DATA, "coco")) else DATA
    for name, root in (("voc", DATA), ("coco", coco_root)):
        try:
            real[name] = build_dataset(name, root, SPLIT)
        except DataError as exc:
            print(f"{name.upper()}: not used ({exc})")
if not real:
    print("No VOC or COCO data: set CAUSAL_WSSS_DATA (see above) to see their statistics.")

# %%
stats = {name: cooccurrence_stats(dataset) for name, dataset in real.items()}
for name, s in stats.items():
    print(f"== {name.upper()} '{SPLIT}' at {real[name].root}\n{format_stats_table(s, top=10)}\n")

# %%
for name, s in stats.items():
    present = [c for c in s["classes"] if s["image_counts"][c] > 0]
    top = sorted(present, key=lambda c: -s["image_counts"][c])[:TOP_CLASSES]
    fig = plot_cooccurrence({**s, "classes": [c for c in s["classes"] if c in top]})
    fig.axes[0].set_title(f"{name.upper()}: P(b | a), {len(top)} most frequent classes")
    save_figure(fig, f"{FIGURES_DIR}/02_confounding_in_data_{name}.png")
    plt.show()

# %% [markdown]
# Read a row $a$ against the base rate of each column $b$: a pair is confounded when
# $P(b \mid a)$ is far above $P(b)$. The example of notebook 01, in numbers:

# %%
for name, s in stats.items():
    p_person = s["image_counts"]["person"] / s["num_images"]
    print(f"{name.upper()}: P(person | horse) = {conditional_probability(s)['horse']['person']:.2f}"
          f"   P(person) = {p_person:.2f}")

# %% [markdown]
# ## 2. A benchmark whose confounding we set
#
# Real data sets fix their confounding, and nobody recorded the context of each image. The
# synthetic benchmark (`causal_wsss.data.synthetic`, `causal-wsss synth`) draws every image
# from a small causal model:
#
# 1. an **anchor** class $a$ is drawn uniformly from six classes;
# 2. the **context** (background) is $a$'s preferred one with probability `rho`, otherwise one of
#    the other four contexts: $P(\text{preferred} \mid a) = \rho$, and at $\rho = 1/5$ the
#    context is independent of the class;
# 3. a horse gets a rider and a boat a person aboard with probability `rho`:
#    $P(\text{partner placed} \mid a) = \rho$;
# 4. with probability 0.35 one extra object of any class but the anchor's partner is added,
#    away from the anchor, on the same background.
#
# The files follow the real VOC layout (and COCO's with `coco=True`), so everything that reads
# VOC reads them; a sidecar `synthetic.json` stores each image's context and objects.

# %%
pd.DataFrame({"preferred context": dict(SPEC.preferred),
              "partner": {c: SPEC.partner(c) or "" for c in SPEC.classes}})

# %%
voc_root = generate_synthetic(SYNTH_DIR, n_train=N_TRAIN, n_val=N_VAL, rho=RHO, seed=SEED,
                              size=SIZE, twins=TWINS, progress=PROGRESS)
train = build_dataset("synthetic", voc_root, "train")
info = {img["name"]: img for img in train.meta["images"]}
print(f"{len(train)} training images at rho={RHO} in {voc_root}")

# %%
shown = range(min(8, len(train)))
captions = [" + ".join(o["class"] for o in info[train.names[i]]["objects"])
            + f"\non {info[train.names[i]]['context']}" for i in shown]
fig = plot_image_mask_grid([train.load_image(i) for i in shown],
                           [train.load_mask(i) for i in shown], titles=captions, ncols=4,
                           classes=train.classes)
save_figure(fig, f"{FIGURES_DIR}/02_confounding_in_data_examples.png")
plt.show()

# %% [markdown]
# Each image sits above its ground-truth mask (VOC colours, named in the legend; the pale
# outline is the 255 "void" band that evaluation ignores).
# A segmentation model never sees these masks in training: only the class names.
#
# ### Measured confounding
#
# `measured_cooccurrence` reads the sidecar. $P(\text{preferred} \mid \text{anchor})$ checks the
# generator (it should be close to `rho`); $P(\text{preferred} \mid \text{class in image})$ is
# what a classifier sees: a class that also appears as a partner or an extra object (the person)
# lands on other classes' contexts too.

# %%
measured = measured_cooccurrence(train.meta, "train")
fig = plot_bars(list(SPEC.classes),
                {"P(preferred context | anchor)": list(measured.preferred_given_anchor.values()),
                 "P(preferred context | class in image)":
                     list(measured.preferred_given_present.values())},
                reference=RHO, reference_label=f"rho = {RHO}", ylabel="probability",
                title=f"context confounding, {len(train)} training images")
save_figure(fig, f"{FIGURES_DIR}/02_confounding_in_data_context.png")
plt.show()

# %%
pd.DataFrame({"P(partner placed | anchor)": measured.partner_given_anchor,
              "P(partner | anchor class in image)": measured.partner_given_present,
              "P(partner | anchor class absent)": measured.partner_given_absent},
             ).rename_axis("anchor").round(2)

# %% [markdown]
# The last two columns are the co-occurrence a classifier learns from: with `rho` high, a
# person is far more likely in an image with a horse than without one, so "person-like pixels"
# become evidence for "horse".
#
# ## 3. Explore rho
#
# The explorer below generates a small set (`WIDGET_IMAGES` images at 96 px) for each value of
# the slider once, caches it in `WORK_DIR`, and then only redraws. Left: $P(b \mid a)$ over the
# classes at the chosen `rho`, the selected pair outlined; the diagonal, $P(a \mid a) = 1$, is
# greyed out so that the colour scale spans the off-diagonal values. Right: for the selected pair,
# $P(b \mid a)$ and $P(b \mid \text{not } a)$, and how often $a$ sits on its preferred context,
# over all values of `rho`. Small sets make the curves noisy; the trend is the point.

# %%
explorer = CooccurrenceExplorer(f"{WORK_DIR}/widget", n_images=WIDGET_IMAGES, size=96,
                                seed=SEED)
explorer.precompute(RHO_GRID, progress=PROGRESS)
fig, line = explorer.figure(RHO, ("horse", "person"))
save_figure(fig, f"{FIGURES_DIR}/02_confounding_in_data_rho.png")
print(line)
plt.show()

# %%
explorer.widget(RHO_GRID, value=RHO)

# %% [markdown]
# Try `rho` = 0.2: the context no longer depends on the class (five contexts), yet the person
# still follows the horse, placed as its rider with probability `rho`. At `rho` = 0 the horse
# never stands on grass and never carries a rider. The cell below prints, from the explorer's
# cached sets, $P(\text{person} \mid \text{horse})$ and $P(\text{person} \mid \text{no horse})$
# at these two values and at the benchmark's `rho`. At `rho` = 0 the person is *less* likely
# with a horse than without one: an anti-correlation, so the sign of the confounding flips. It
# does not confound "just as much": compare the gap between the two columns at `rho` = 0 with
# the gap at the benchmark's `rho`. Persons keep coming into horse-free images as boats'
# partners, as anchors and as extra objects whatever `rho` is. Somewhere in between the two
# curves of the widget cross, and there a person says nothing about a horse. (In smoke mode
# the sets are tiny and the numbers noisy.)

# %%
print(pd.DataFrame({"P(person | horse)": {r: explorer.snapshot(r).p_b_given_a("horse", "person")
                                          for r in (0.0, 0.2, RHO)},
                    "P(person | no horse)": {r: explorer.snapshot(r).p_b_given_not_a("horse", "person")
                                             for r in (0.0, 0.2, RHO)}})
      .rename_axis("rho").round(2).to_string())

# %% [markdown]
# ## Exercises
#
# **Exercise 1 (predict, then run).** At `rho` = 0.5, pick an image whose background is grass.
# What is the probability that its anchor is a horse, $P(\text{anchor} = \text{horse} \mid
# \text{grass})$? And is the share of grass images that show a horse *at all* larger or
# smaller than that? Write your prediction down, with the reasoning, from the four steps of
# section 2 and the table of preferred contexts (no class but the horse prefers grass). Then
# put the number in `MY_PREDICTION` and run the cell below: it generates a fresh set at
# `rho` = 0.5 (`CHECK_IMAGES` images of 64 px, a few seconds), reads each image's anchor,
# context and objects from the sidecar, and prints the measured shares beside the exact value.
#
# **Exercise 2.** From the labels of the 400 training images (`cooccurrence_stats(train)`),
# compute the *lift* $P(b \mid a) / P(b)$ of every pair and name the three largest. Which of
# them did the generator plant?

# %%
MY_PREDICTION = None  # your P(anchor = horse | context = grass) at rho = 0.5, e.g. 0.3
check_rho = 0.5
check_meta = load_meta(generate_synthetic(f"{WORK_DIR}/exercise1", n_train=CHECK_IMAGES, n_val=0,
                                          rho=check_rho, seed=SEED + 1, size=64))
on_grass = [img for img in check_meta["images"] if img["context"] == "grass"]
others = len(SPEC.classes) - 1  # classes whose preferred context is not grass
exact = check_rho / (check_rho + others * (1 - check_rho) / (len(SPEC.contexts) - 1))
print(f"{len(on_grass)} of {len(check_meta['images'])} images on grass at rho = {check_rho}")
print(f"P(anchor = horse | grass):    measured {np.mean([i['anchor'] == 'horse' for i in on_grass]):.2f},"
      f" exact (Bayes) {exact:.2f}; your prediction: {MY_PREDICTION}")
print(f"P(horse in image | grass):    measured "
      f"{np.mean([any(o['class'] == 'horse' for o in i['objects']) for i in on_grass]):.2f}")

# %% [markdown]
# <details><summary>Solution 1 (click to unfold)</summary>
#
# Bayes' rule over the anchor, which is uniform over the six classes. A horse anchor stands on
# grass with probability $\rho$; an anchor of any of the other five classes lands on grass only
# when its context is not its preferred one, with probability $1 - \rho$, and then picks grass
# among its four other contexts:
#
# $$P(\text{anchor} = \text{horse} \mid \text{grass}) =
#   \frac{\rho}{\rho + 5\,(1 - \rho)/4},$$
#
# the "exact" value the cell prints; the measured share differs from it by sampling noise only.
# It is well above the horse's base rate of one in six, although at `rho` = 0.5 half of the
# horses stand elsewhere: a context is evidence for a class even under mild confounding, since
# no other class prefers grass. The share of grass images *showing* a horse is larger still:
# with probability 0.35 an image gets one extra object of any class but the anchor's partner,
# on the same background, so some grass images with another anchor carry a horse as well. A
# classifier sees labels, not anchors, so the second number is the one it learns from.
# </details>

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 2: lift = P(b | a) / P(b) from the label counts. The planted pairs (horse -> person,
# boat -> person) come out on top; other pairs sit near 1 or below (the extra object avoids the
# anchor's partner, and every image has one anchor).
counts = cooccurrence_stats(train)
cond = conditional_probability(counts)
base = {c: counts["image_counts"][c] / counts["num_images"] for c in counts["classes"]}
lifts = pd.Series({(a, b): cond[a][b] / base[b] for a in counts["classes"]
                   for b in counts["classes"]
                   if a != b and counts["image_counts"][a] and base[b] > 0}).sort_values()
print(lifts.tail(3).round(2))
assert lifts.notna().all()

# %% [markdown]
# ## What we saw
#
# - Co-occurrence is visible in image-level labels alone: $P(b \mid a)$ far above $P(b)$ marks
#   pairs that share a context, the trace of the confounder $C$.
# - The synthetic benchmark sets the confounding with one number: each class sits on its
#   preferred context with probability `rho`, and horse-person and boat-person appear together
#   with probability `rho`. The measured rates follow `rho`, and the sidecar records each image's
#   context, so we can later measure how much of a CAM lands on context.
# - What a classifier sees, $P(\text{context} \mid \text{class in image})$, is weaker than the
#   generator's parameter for classes that also appear as partners or extra objects.
# - Lowering `rho` does not remove the confounding at once: the person-horse association
#   weakens, crosses zero and turns into a weaker anti-correlation at `rho` = 0.
#
# **Next:** train a CAM classifier on this benchmark and see where its CAMs leak:
# [03 · CAM training](03_cam_training.ipynb).
