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
# # 10 · Full MS-COCO 2014 experiment (GPU kernel)
#
# **What you will learn**
#
# - how MS-COCO 2014 becomes a semantic segmentation set: 80 categories with ids 1-90 (with
#   gaps) remapped to 81 contiguous labels, masks drawn from instance annotations, crowd regions
#   ignored, training images without any annotation dropped;
# - the `paper` preset on COCO: what changes from VOC (data, 100,000 DeepLab iterations), and
#   where each value comes from;
# - how to run round 0 and three CONTA rounds on one GPU, and why it takes days;
# - how to read the outcome beside the COCO numbers published for IRNet, SEAM and CONTA.
#
# **Before this:** [09 · Full PASCAL VOC 2012 experiment](09_pascal_voc.ipynb): the same run on
# VOC, with the `paper` preset explained in full. Prerequisites: PyTorch and convolutional
# networks, as from notebook 03 on; for the run itself, a machine with a CUDA GPU.
#
# **Run time and hardware:** as it is, this notebook takes seconds, plus a few minutes and a
# few GB of memory to read COCO's annotations when `CAUSAL_WSSS_DATA` points at them;
# it shows the configuration and any results already in `../runs/coco_paper`. The experiment
# itself (`FULL_SCALE = True`) needs COCO 2014 and one CUDA GPU for days (section 3 projects
# how many on an H200-class GPU from measured stage rates). In smoke mode (`CAUSAL_WSSS_SMOKE=1`) it runs the `smoke` preset end to end on a
# tiny generated set in the COCO layout, under a minute on a laptop CPU.

# %% tags=["parameters"]
import os
import tempfile

SMOKE = os.environ.get("CAUSAL_WSSS_SMOKE", "0") == "1"  # tests: tiny stand-in data, temp folders
FULL_SCALE = False  # True runs the experiment below (papermill -p FULL_SCALE True); days on a GPU
DATA = os.environ.get("CAUSAL_WSSS_DATA", "")  # COCO root (train2014/ ...), or a folder with coco/
PRESET = "paper"
ROUNDS = 3  # CONTA rounds after round 0 (docs/method.md §4: T = 3)
SEED = 0
OVERRIDES: list[str] = ["seg.iterations=100000"]  # CONTA's COCO schedule (docs/method.md §4)
RUN_DIR = "../runs/coco_paper"  # the same folder as `causal-wsss run ... --out runs/coco_paper`
STANDIN = {"n_train": 16, "n_val": 4, "size": 64}  # smoke mode: the generated stand-in
SMOKE_OVERRIDES = ["seg.iterations=4", "cam_infer.scales=1.0"]  # smoke: `smoke` preset, faster
PROGRESS = not SMOKE
WORK_DIR = tempfile.mkdtemp(prefix="causal_wsss_10_")  # smoke mode: stand-in data and its run
FIGURES_DIR = f"{WORK_DIR}/figures" if SMOKE else "../figures"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from causal_wsss.config import resolve
from causal_wsss.constants import COCO_CATEGORIES, COCO_CLASSES, COCO_ID_TO_LABEL
from causal_wsss.course import (
    check_gpu_run,
    gpu_projection,
    forward_seconds,
    run_or_read,
    show_run_figures,
    standin_root,
)
from causal_wsss.data.stats import conditional_probability, cooccurrence_stats
from causal_wsss.errors import ConfigError, DataError
from causal_wsss.results import PAPER_PRESET_SOURCES, config_sources_table, results_table
from causal_wsss.stages.datasets import load_datasets
from causal_wsss.stages.models import build_cam_model
from causal_wsss.viz import plot_image_mask_grid, plot_results_table, save_figure

pd.set_option("display.max_colwidth", None)
pd.set_option("display.max_rows", 100)

# %% [markdown]
# ## 1. The data
#
# Download `train2014.zip`, `val2014.zip` and `annotations_trainval2014.zip` from the COCO site
# and install `pycocotools` (`pip install "causal-wsss[coco]"`). The root holds:
#
# ```
# ROOT/                                      # --dataset coco --root ROOT
#   train2014/COCO_train2014_*.jpg           # 82,783 images
#   val2014/COCO_val2014_*.jpg               # 40,504 images
#   annotations/instances_train2014.json
#   annotations/instances_val2014.json
# ```
#
# `CAUSAL_WSSS_DATA` may point at `ROOT` itself or at a folder holding it as `coco/` (as in
# notebook 02). In smoke mode the synthetic benchmark is written in this layout as well (16
# training and 4 validation images; its numbers are not COCO's).

# %%
if SMOKE:
    DATA = standin_root(WORK_DIR, seed=SEED, coco=True, **STANDIN)
coco_root = ""  # empty: the configuration below says which key is missing
if DATA:
    data = Path(DATA).expanduser().resolve()  # absolute, as `causal-wsss run` saves it
    coco_root = data / "coco" if (data / "coco").is_dir() else data
    for sub in ("train2014", "val2014", "annotations"):
        count = len(list((coco_root / sub).iterdir())) if (coco_root / sub).is_dir() else "missing"
        print(f"{str(coco_root / sub):60s} {count}")
else:
    print("CAUSAL_WSSS_DATA is not set: nothing to check (see the layout above).")

# %% [markdown]
# ### From instances to semantic labels
#
# COCO numbers its 80 categories from 1 to 90 and skips ten ids (left over from categories that
# were planned and dropped). Label maps need contiguous indices, so `constants.COCO_ID_TO_LABEL`
# maps the ids to labels 1-80, with 0 for background: 81 labels, the count [docs/method.md §5](../docs/method.md#5-evaluation-protocol) uses.

# %%
missing_ids = sorted(set(range(1, 91)) - set(COCO_ID_TO_LABEL))
print(f"{len(COCO_CATEGORIES)} categories, {len(COCO_CLASSES)} labels with background; "
      f"ids never used: {missing_ids}")
shown_ids = (1, 11, 13, 25, 27, 90)  # around the first gaps, and the last id
pd.DataFrame([{"COCO id": cid, "name": name, "label": COCO_ID_TO_LABEL[cid]}
              for cid, name in COCO_CATEGORIES if cid in shown_ids]).set_index("COCO id")

# %% [markdown]
# The loader (`causal_wsss.data.coco.COCOSegmentation`) draws each image's mask from its
# instances:
#
# - pixels of no instance are background (0);
# - **crowd regions** (`iscrowd=1`, e.g. a stadium audience) are drawn first as 255, *ignored*
#   by every loss and score, as COCO's own evaluation ignores them; an ordinary instance drawn
#   on top wins;
# - ordinary instances are drawn from the largest to the smallest, so a small object on a large
#   one stays visible;
# - crowd classes still count in the image-level labels.
#
# **Unlabelled training images are dropped:** 702 of the 82,783 training images have no
# annotation, and a classifier learns nothing class-specific from an image with an empty label
# vector, so training uses the other 82,081 (the usual WSSS list). Validation keeps all 40,504.
#
# The run below would also ask for SBD's `train_aug`, VOC's training list: COCO has none, so
# the pipeline falls back to `train`. In smoke mode the configuration asks for `train_aug` on
# purpose, to show the fallback.

# %%
cfg_overrides = ["data.dataset=coco", f"data.root={coco_root}"]
paper_cfg = resolve(PRESET, [*cfg_overrides, *OVERRIDES], seed=SEED, rounds=ROUNDS)
cfg = (resolve("smoke", [*cfg_overrides, "data.train_split=train_aug", *SMOKE_OVERRIDES],
               seed=SEED, rounds=1) if SMOKE else paper_cfg)
try:
    sets = load_datasets(cfg)
    for split, ds in sets.items():
        print(f"{split:5s}: asked for '{getattr(cfg.data, split + '_split')}', read "
              f"'{ds.split}': {len(ds)} images, {ds.num_classes} labels")
except (DataError, ConfigError) as exc:
    sets = None
    print(f"MS-COCO 2014 is not usable, so the experiment will not run:\n  {exc}")

# %%
if sets is not None:
    train = sets["train"]
    listed = len(json.loads(train.annotation_path.read_text())["images"])
    print(f"train: {listed} images in {train.annotation_path.name}, {len(train)} kept "
          f"({listed - len(train)} without any annotation dropped)")
    val = sets["val"]
    shown = range(min(6, len(val)))
    crowd = sum(iscrowd for i in shown for _, iscrowd, _, _ in val.annotations(i))
    print(f"crowd instances among the {len(shown)} images below: {crowd}")
    labels = val.label_matrix()
    titles = [" + ".join(val.classes[k + 1] for k in labels[i].nonzero()[0]) for i in shown]
    fig = plot_image_mask_grid([val.load_image(i) for i in shown],
                               [val.load_mask(i) for i in shown], titles=titles, ncols=3)
    save_figure(fig, f"{FIGURES_DIR}/10_ms_coco_examples.png")
    plt.show()

# %% [markdown]
# Images above their masks (VOC palette indexed by COCO label). Crowd regions, 255, would show
# in light beige; the stand-in has none, COCO marks crowds (an audience, a flock) this way.
#
# ## 2. The `paper` preset on COCO
#
# Everything is as on VOC (notebook 09) except the data and the segmentation schedule, which
# follows CONTA's COCO config (100,000 iterations instead of 20,000):

# %%
coco_sources = {
    **PAPER_PRESET_SOURCES,
    "data.dataset": "docs/method.md §5: MS-COCO 2014, 81 labels",
    "data.root": "your copy (--root / CAUSAL_WSSS_DATA)",
    "data.train_split": "docs/method.md §5: COCO train 2014 (no train_aug: falls back to train)",
    "data.eval_split": "ours: CAMs and pseudo-masks scored on COCO train (no COCO protocol "
                       "for them in docs/method.md)",
    "data.val_split": "docs/method.md §5: COCO val 2014, 40,504 images",
    "seg.iterations": "docs/method.md §4: CONTA's COCO config, 100,000 iterations",
}
config_sources_table(paper_cfg, coco_sources)

# %% [markdown]
# ## 3. Running it
#
# From the repository root, on a machine with a GPU (rerun the same command to resume):
#
# ```bash
# export CAUSAL_WSSS_DATA=/data/coco          # holds train2014/, val2014/, annotations/
# causal-wsss run --dataset coco --root $CAUSAL_WSSS_DATA --preset paper --rounds 3 \
#     --out runs/coco_paper seg.iterations=100000
# ```
#
# or through papermill, keeping the executed notebook as a record:
#
# ```bash
# mkdir -p runs/coco_paper && cd notebooks
# papermill 10_ms_coco.ipynb ../runs/coco_paper/10_ms_coco.ipynb -k python3 -p FULL_SCALE True
# ```
#
# Both use `runs/coco_paper` and the same configuration, so either resumes the other. As for
# VOC, the run needs the ImageNet weights (or `cam.weights=` / `seg.weights=` in `OVERRIDES`)
# and pydensecrf for IRNet's CRF.
#
# **Expected run time on one GPU.** No COCO run has been made. Projected from the stage rates
# measured once on an H200 with random weights (`docs/benchmarks.md`; notebook 09, section 3):
# COCO has about 8 times VOC's training images and a 5 times longer DeepLab schedule. Per round:

# %%
COCO_TRAIN, COCO_VAL = 82081, 40504  # the annotated training images, every validation image
table, line = gpu_projection(paper_cfg, COCO_TRAIN, COCO_VAL)
display(table)
print(line)

# %% [markdown]
# Disk: the float16 CAMs of 82,081 images take
# roughly 150 GB a round (also an estimate); a finished round's `cams/` can be archived once
# its figures are drawn, since later rounds read only its predictions. Try the setup first
# with `data.max_images=2000` in `OVERRIDES` (every split truncated; a different experiment).
#
# The checks before starting:

# %%
ok = check_gpu_run(cfg, len(COCO_CLASSES), build_networks=SMOKE or FULL_SCALE)  # as in notebook 09

# %% [markdown]
# ## 4. The run
#
# With `FULL_SCALE = True` and the checks passed, the next cell runs everything into `RUN_DIR`;
# otherwise it only reads a report already there. In smoke mode it runs the `smoke` preset with
# one CONTA round on the stand-in.

# %%
run_dir = Path(f"{WORK_DIR}/run" if SMOKE else RUN_DIR)
ready = sets is not None and ok["crf"] and ok["weights"]
report, measured = run_or_read(cfg, run_dir, run=SMOKE or (FULL_SCALE and ready),
                               full_scale=FULL_SCALE, progress=PROGRESS,
                               note=", synthetic stand-in (not COCO)" if SMOKE else "")

# %% [markdown]
# ## 5. Beside the published numbers
#
# [docs/method.md §6](../docs/method.md#6-headline-results) has only segmentation mIoU on COCO val for the CONTA paper's
# re-implemented baselines ("*"); the tags say how far each number was verified. Our rows add
# CAM and pseudo-mask mIoU on COCO train (fixed threshold 0.15) from the run's report.

# %%
table = results_table("coco", report, measured)
display(table.dropna(axis=1, how="all").round(1))

# %%
fig = plot_results_table(table, title="MS-COCO 2014: published vs measured here (mIoU %)")
if report is not None:
    save_figure(fig, f"{FIGURES_DIR}/10_ms_coco_results.png")
plt.show()

# %% [markdown]
# The rounds, and the baseline's and the last round's CAMs on the same training images:

# %%
saved_figures = show_run_figures(report, run_dir, FIGURES_DIR, "10_ms_coco")

# %% [markdown]
# ## Exercises
#
# **Exercise 1 (predict, then run).** For which three categories $a$ is
# $P(\text{person} \mid a)$ highest, i.e. which objects almost never appear without a person?
# And for those three, is the reverse, $P(a \mid \text{person})$, high too? Predict before
# running: on COCO (when `CAUSAL_WSSS_DATA` points at it) think of what people hold, wear or
# ride; on the smoke stand-in, of the pairs notebook 02's generator plants. Write the
# predictions down (in `MY_PREDICTION`, say), then run the cell: it counts the training set's
# image-level labels with `cooccurrence_stats`, notebook 02's function (no image is decoded).
#
# **Exercise 2 (predict, then run).** CAM inference passes every training image through the
# CAM network at four scales and their flips, so its cost depends on the images' size, and
# COCO's images are larger than the benchmark's. If you double an image's side, by what factor
# does one forward pass take longer? Predict the factor for 128 → 256 px and for 256 → 512 px,
# then run the second cell: it times the `cpu` preset's CAM network (MobileNetV2 with random
# weights: the time does not depend on them) on this machine, in about a second.

# %%
MY_PREDICTION = None  # e.g. (["horse", "bicycle", "skis"], "P(a | person) is high too")
if sets is None:
    print("no training set was read (section 1): nothing to count")
else:
    label_stats = cooccurrence_stats(sets["train"])
    given = conditional_probability(label_stats)
    counts = label_stats["image_counts"]
    with_person = pd.DataFrame([{"category": a, "images": counts[a],
                                 "P(person | a)": given[a]["person"],
                                 "P(a | person)": given["person"][a]}
                                for a in label_stats["classes"] if a != "person" and counts[a]])
    display(with_person.set_index("category").sort_values("P(person | a)", ascending=False)
            .head(5).round(2))

# %% [markdown]
# <details><summary>Solution 1 (click to unfold)</summary>
#
# On the stand-in the top rows are the generator's planted pairs: horse and boat take
# a person along with probability `rho`, so $P(\text{person} \mid a)$ is high for them, while
# $P(a \mid \text{person})$ stays low, because persons also appear as anchors and extra
# objects in images without a horse or a boat (with 16 training images the numbers are noisy,
# and a class seen in one or two images can top the list). On COCO the top categories are of
# the same kind: things people carry, wear or ride, seen almost only with a person. The
# reverse is small, since "person" is in a large share of all images: co-occurrence is
# asymmetric, and a CAM for such a category learns "person pixels" as evidence for it, the
# confounding of notebooks 01 and 02 at COCO's scale. Look at the `images` column before
# trusting a row: a category seen in few images can reach 1.0 by chance.
# </details>

# %%
MY_PREDICTION = None  # the factor per doubling of the side, e.g. 2
timing_net = build_cam_model(resolve("cpu", ["cam.weights=none"]), len(COCO_CLASSES) - 1)
seconds = forward_seconds(timing_net, (128, 256, 512))
for small, big in ((128, 256), (256, 512)):
    print(f"{small} -> {big} px: {seconds[big] / seconds[small]:.1f} times longer "
          f"({1000 * seconds[small]:.0f} -> {1000 * seconds[big]:.0f} ms a pass)")

# %% [markdown]
# <details><summary>Solution 2 (click to unfold)</summary>
#
# A convolution's work grows with the number of pixels, the square of the side: about 4
# times per doubling. Small images fall short of it, because fixed costs per call (dispatching
# each layer, allocating memory) weigh more there; the larger pair comes closer to 4. So CAM
# inference on an image set grows with its number of images times their pixels, and with the
# number of scales, like every stage that passes over the images once (IR labels, the walk,
# predictions); a training's cost instead follows its number of steps and its crop size.
# </details>

# %% [markdown]
# ## What we saw
#
# - COCO becomes an 81-label segmentation set through an id remapping (ten unused ids), masks
#   drawn from instances with crowd regions ignored, and a training list without the images
#   that carry no annotation.
# - The pipeline is the same as on VOC: `--dataset coco`, the `paper` preset, and CONTA's longer
#   DeepLab schedule (`seg.iterations=100000`); there is no `train_aug`, so `train` is used.
# - Four rounds on COCO take days on one H200-class GPU (section 3's projection); try the setup
#   on a truncated set first.
# - The published COCO gain of CONTA is under one point of mIoU, and all but one of those numbers
#   are unverified: only means over several seeds could show such a difference. In smoke mode
#   the measured rows come from a tiny stand-in and say nothing about COCO.
#
# **Next:** gather every run and regenerate the course's figures:
# [11 · Results](11_results.ipynb).
