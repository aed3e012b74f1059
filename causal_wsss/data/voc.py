"""PASCAL VOC 2012 (plus SBD's ``train_aug``) in its original folder layout."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..constants import IGNORE_INDEX, VOC_CLASSES
from ..errors import DataError
from .base import SegmentationDataset, Transform, file_stems, read_label_png

AUG_SPLIT = "train_aug"
_AUG_LISTS = ("ImageSets/SegmentationAug/train_aug.txt", "ImageSets/Segmentation/train_aug.txt")


def find_voc_root(root: str | os.PathLike) -> Path:
    """The ``VOC2012`` folder for ``root`` = the folder holding ``VOCdevkit/``, ``VOCdevkit/``
    itself, or ``VOC2012/`` itself (the first of these that holds ``JPEGImages/``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder; expected the folder "
                        "holding VOCdevkit/ (or VOCdevkit/VOC2012 itself)")
    candidates = (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root)
    for folder in candidates:
        if (folder / "JPEGImages").is_dir():
            return folder
    looked = ", ".join(str(c / "JPEGImages") for c in candidates)
    raise DataError(f"no PASCAL VOC 2012 folder under {root}: looked for {looked}; expected "
                    "root to hold VOCdevkit/VOC2012/ (JPEGImages/, SegmentationClass/, "
                    "Annotations/, ImageSets/Segmentation/)")


def voc_splits(voc_root: Path) -> list[str]:
    """Splits with a list file under ``voc_root/ImageSets`` (``train_aug`` only with its masks)."""
    splits = sorted(file_stems(voc_root / "ImageSets" / "Segmentation", ".txt") - {AUG_SPLIT})
    if (voc_root / "SegmentationClassAug").is_dir() and any(
            (voc_root / p).is_file() for p in _AUG_LISTS):
        splits.append(AUG_SPLIT)
    return splits


def read_id_list(path: Path) -> list[str]:
    """Image ids from a split list: one id per line, or DeepLab's ``/JPEGImages/x.jpg ...`` pairs."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split list {path}: {exc}; expected one image id per line") \
            from exc
    ids = []
    for line in lines:
        token = line.split()[0] if line.strip() else ""
        if token:
            ids.append(Path(token).stem if ("/" in token or "." in token) else token)
    if not ids:
        raise DataError(f"split list {path} is empty; expected one image id per line")
    return list(dict.fromkeys(ids))


def parse_voc_xml(path: Path) -> list[str]:
    """Class names of every ``<object>`` in a VOC annotation (difficult and truncated included)."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"cannot parse annotation {path}: {exc}; expected PASCAL VOC XML with "
                        "<object><name> entries") from exc
    names = []
    for obj in tree.getroot().findall("object"):
        name = obj.findtext("name")  # direct child: person-layout <part><name> is not a class
        if name is None or not name.strip():
            raise DataError(f"annotation {path} has an <object> without a <name>; expected one "
                            "of the 20 VOC class names")
        names.append(name.strip())
    return names


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 segmentation splits, 21 labels (``constants.VOC_CLASSES``).

    ``root`` is the folder holding ``VOCdevkit/``, ``VOCdevkit/`` itself or ``VOC2012/``
    itself. ``split`` names a list ``ImageSets/Segmentation/<split>.txt`` (``train``, ``val``,
    ``trainval``, ...) or is ``train_aug`` (SBD: the list ``ImageSets/SegmentationAug/train_aug.txt``
    or ``ImageSets/Segmentation/train_aug.txt`` plus the masks ``SegmentationClassAug/``).

    Image-level labels come from ``Annotations/<id>.xml`` (every ``<object><name>``, difficult
    ones included); an image without XML takes the classes present in its mask. Masks come
    from ``SegmentationClassAug/`` for ``train_aug`` and from ``SegmentationClass/`` otherwise
    (falling back to ``SegmentationClassAug/``); they are index PNGs whose 255 border band is
    kept as ``IGNORE_INDEX``. A split none of whose images has a mask (``test``) yields samples
    without ``mask``. ``max_images > 0`` keeps the first ``max_images`` ids of the list.
    """

    classes = VOC_CLASSES

    _per_image_fields = ("_mask_paths",)

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Transform | None = None, max_images: int = 0) -> None:
        if max_images < 0:
            raise DataError(f"max_images must be >= 0 (0 = all), got {max_images}")
        voc_root = find_voc_root(root)
        list_path = self._find_list(voc_root, split)
        names = read_id_list(list_path)
        if max_images:
            names = names[:max_images]
        super().__init__(root, split, names, transform)
        self.voc_root = voc_root
        self.list_path = list_path

        jpeg_dir = voc_root / "JPEGImages"
        present = file_stems(jpeg_dir, ".jpg")
        missing = [n for n in names if n not in present]
        if missing:
            raise DataError(f"{len(missing)} image(s) listed in {list_path} are missing from "
                            f"{jpeg_dir}, e.g. {jpeg_dir / (missing[0] + '.jpg')}")

        mask_dirs = [voc_root / "SegmentationClassAug"] if split == AUG_SPLIT else [
            voc_root / "SegmentationClass", voc_root / "SegmentationClassAug"]
        stems = [file_stems(d, ".png") for d in mask_dirs]
        self._mask_paths: list[Path | None] = []
        for name in names:
            found = next((d / f"{name}.png" for d, s in zip(mask_dirs, stems) if name in s), None)
            self._mask_paths.append(found)
        self._mask_dirs = mask_dirs
        self._has_masks = any(p is not None for p in self._mask_paths)
        self._xml_stems = file_stems(voc_root / "Annotations", ".xml")
        self._class_index = {c: k for k, c in enumerate(self.classes)}
        self._used = self._sidecar_classes(voc_root)

    def _sidecar_classes(self, voc_root: Path) -> tuple[int, ...] | None:
        """The classes a synthetic set's sidecar lists (``synthetic.json``), or None for real VOC."""
        import json

        path = voc_root / "synthetic.json"
        if not path.is_file():
            return None
        try:
            names = json.loads(path.read_text())["classes"]
            used = (0, *sorted(self._class_index[c] for c in names))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read the class list of the synthetic sidecar {path}: {exc!r}; "
                            "expected a 'classes' list of VOC class names") from exc
        self._sidecar_path = path
        return used

    def _declared(self) -> str:
        """The classes a label may name, for messages: the sidecar's or the 20 VOC classes."""
        if self._used is None:
            return f"one of the 20 VOC classes ({', '.join(self.classes[1:])})"
        names = ", ".join(self.classes[k] for k in self._used[1:])
        return f"one of the classes its synthetic sidecar {self._sidecar_path} declares ({names})"

    def _check_mask_classes(self, mask: np.ndarray, path: Path) -> np.ndarray:
        """``mask`` if every value is a declared class (:attr:`used_classes`) or IGNORE_INDEX;
        DataError naming the file otherwise. Real VOC declares all 21 labels, which
        :func:`read_label_png` has already checked."""
        if self._used is None:
            return mask
        allowed = np.zeros(256, dtype=bool)
        allowed[list(self._used)] = True
        allowed[IGNORE_INDEX] = True
        bad = ~allowed[mask]
        if bad.any():
            value = int(mask[bad][0])
            raise DataError(f"mask {path} holds value {value} ({self.classes[value]}), a class "
                            f"the data set does not declare; expected {self._declared()}, or "
                            f"{IGNORE_INDEX} (ignore)")
        return mask

    @property
    def used_classes(self) -> tuple[int, ...]:
        """All 21 VOC labels, or background plus the sidecar's classes for a synthetic set."""
        return self._used if self._used is not None else super().used_classes

    @staticmethod
    def _find_list(voc_root: Path, split: str) -> Path:
        if split == AUG_SPLIT:
            candidates = [voc_root / p for p in _AUG_LISTS]
            aug_masks = voc_root / "SegmentationClassAug"
            if not aug_masks.is_dir():
                raise DataError(f"split '{AUG_SPLIT}' needs SBD's masks at {aug_masks}; expected "
                                "a folder of index PNGs (SegmentationClassAug)")
        else:
            candidates = [voc_root / "ImageSets" / "Segmentation" / f"{split}.txt"]
        for path in candidates:
            if path.is_file():
                return path
        known = ", ".join(voc_splits(voc_root)) or "none"
        raise DataError(f"unknown or missing VOC split '{split}': no list at "
                        f"{' or '.join(str(c) for c in candidates)}; splits available under "
                        f"{voc_root}: {known}")

    @property
    def has_masks(self) -> bool:
        return self._has_masks

    def image_path(self, i: int) -> Path:
        return self.voc_root / "JPEGImages" / f"{self.names[i]}.jpg"

    def mask_path(self, i: int) -> Path | None:
        """Path of the mask of image ``i`` (``None`` where no mask folder holds it)."""
        return self._mask_paths[self._check_index(i)]

    def load_mask(self, i: int) -> np.ndarray | None:
        i = self._check_index(i)
        if not self._has_masks:
            return None
        path = self._mask_paths[i]
        if path is None:
            looked = " or ".join(str(d / f"{self.names[i]}.png") for d in self._mask_dirs)
            raise DataError(f"missing mask for image '{self.names[i]}' of split '{self.split}': "
                            f"expected {looked}")
        return self._check_mask_classes(read_label_png(path, self.num_classes), path)

    def _read_labels(self, i: int) -> np.ndarray:
        name = self.names[i]
        labels = np.zeros(self.num_classes - 1, dtype=bool)  # (K-1,)
        if name in self._xml_stems:
            path = self.voc_root / "Annotations" / f"{name}.xml"
            for cls in parse_voc_xml(path):
                k = self._class_index.get(cls, 0)
                if k == 0 or (self._used is not None and k not in self._used):
                    raise DataError(f"annotation {path} names class '{cls}'; expected "
                                    f"{self._declared()}")
                labels[k - 1] = True
            return labels
        path = self._mask_paths[i]
        if path is None:
            raise DataError(f"no labels for image '{name}': neither "
                            f"{self.voc_root / 'Annotations' / (name + '.xml')} nor a mask exists")
        present = np.unique(self._check_mask_classes(read_label_png(path, self.num_classes), path))
        present = present[(present != 0) & (present != IGNORE_INDEX)]
        labels[present.astype(np.int64) - 1] = True
        return labels
