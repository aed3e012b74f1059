"""A copy of a VOC-layout data folder with every image and mask rescaled to a given long side.

    python bench/downsample_voc.py /tmp/speed/synth /tmp/speed/synth280to150 --long 150

The same scenes at a lower resolution: images with PIL's bicubic filter (saved as JPEG at the
synthetic generator's quality, no chroma subsampling), the class masks (``SegmentationClass``,
palette PNGs) with nearest neighbour, everything else copied as it is. docs/benchmarks.md ("The
working size") uses it to split what a 150 px data set loses into what its pixels lack and what
its training lacks.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from causal_wsss.data.synthetic import JPEG_QUALITY  # noqa: E402
from causal_wsss.data.voc import find_voc_root  # noqa: E402
from causal_wsss.errors import CausalWSSSError  # noqa: E402

RESIZED = {"JPEGImages": Image.BICUBIC, "SegmentationClass": Image.NEAREST}


def rescaled(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(W, H) with its long side ``long_side``, the short side in proportion (at least 1)."""
    w, h = size
    s = long_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def downsample(src: Path, dst: Path, long_side: int) -> int:
    """Write the rescaled copy of ``src`` (a folder holding a VOC root) to ``dst``; the images."""
    voc = find_voc_root(src)
    if dst.exists():
        raise CausalWSSSError(f"{dst} exists; choose a new folder")
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*RESIZED))
    out_voc = tmp / voc.relative_to(src)
    count = 0
    for sub, resample in RESIZED.items():
        if not (voc / sub).is_dir():
            continue
        (out_voc / sub).mkdir(parents=True, exist_ok=True)
        for path in sorted((voc / sub).iterdir()):
            with Image.open(path) as image:
                small = image.resize(rescaled(image.size, long_side), resample)
            if sub == "JPEGImages":
                small.save(out_voc / sub / path.name, quality=JPEG_QUALITY, subsampling=0)
                count += 1
            else:
                small.save(out_voc / sub / path.name)
    tmp.rename(dst)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder holding VOCdevkit/ (or VOC2012/ itself)")
    parser.add_argument("dst", type=Path, help="new folder for the copy")
    parser.add_argument("--long", type=int, default=150, help="long side in pixels (default 150)")
    args = parser.parse_args(argv)
    if args.long < 8:
        parser.error(f"--long must be at least 8 pixels (got {args.long})")
    try:
        count = downsample(args.src, args.dst, args.long)
    except (CausalWSSSError, OSError) as exc:
        print(f"downsample_voc: {exc}", file=sys.stderr)
        return 2
    print(f"{count} images rescaled to a long side of {args.long} px in {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
