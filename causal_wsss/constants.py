"""Fixed facts shared by every module: class names, the ignore label, image normalisation."""

from __future__ import annotations

import numpy as np

NUMERICS = 3
"""The numerics version of today's code: which floating-point path a run's numbers come from.
1: before the speed issue (issue 29); 2: batch norm folded into the convolutions for inference
and in frozen stems, and the working size ``cam_infer.work_long``, which moved a round-0 seed's
pseudo-mask mIoU by +0.5 to +0.7 points; 3: the CAM network trained channels_last on the CPU
too (docs/benchmarks.md, "Second pass"). ``CAUSAL_WSSS_SPEEDUPS`` selects an older
one (:func:`causal_wsss.runtime.numerics_level`)."""

IGNORE_INDEX = 255
"""Label of pixels that are scored by no metric and trained by no loss (VOC's void band)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
"""The 21 PASCAL VOC labels; index 0 is background, 1..20 are the object classes."""

# COCO 2014 category ids (1..90 with gaps) and names, in the order of instances_*.json.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"),
    (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"),
    (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"),
    (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
    (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)
COCO_CLASSES: tuple[str, ...] = ("background",) + tuple(name for _, name in COCO_CATEGORIES)
"""The 81 contiguous COCO labels; index 0 is background."""
COCO_ID_TO_LABEL: dict[int, int] = {cid: i + 1 for i, (cid, _) in enumerate(COCO_CATEGORIES)}
"""Maps COCO category ids (1..90, with gaps) to contiguous labels 1..80."""


def voc_palette() -> np.ndarray:
    """The standard VOC colour map as a (256, 3) uint8 array (index 255 is the void colour)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        c, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[label] = (r, g, b)
    return palette


BENCHMARK_SIZE = 280
"""Long side (px) of the benchmark of ``make demo``, ``causal-wsss synth`` and the notebooks: at
output stride 16 an 18x14 CAM grid, where CAMs of a pretrained trunk sit on the objects
(docs/results.md, "The regime search"); the former 150 px (a 9x7 grid) gave diffuse CAMs."""

BENCHMARK_TWINS = 20
"""Validation images that get do(context) twins in the benchmark (about 20 x 10 twin images:
enough for the context effect and the false positives, at a quarter of a round's time)."""
