"""The stage table of a round: every stage in running order, the files each leaves in
``round_k/`` and the stages each is computed from.

Read by :mod:`causal_wsss.pipeline` (which runs the stages in this order) and by
:mod:`causal_wsss.runfolder` (which checks their files on resume and redoes a stage with every
stage computed from it). The CAM methods' own stages (:func:`causal_wsss.methods.method_stages`)
are added after ``cam_train``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .methods import method_stages

STAGES = ("confounders", "cam_train", *method_stages(), "cams", "cam_eval", "twin_eval",
          "ir_labels", "irn_train", "pseudo", "pseudo_eval", "seg_train", "seg_eval", "seg_predict")
"""Every stage a round may run; the CAM methods' own stages (``cam_expand`` ... of
:mod:`causal_wsss.methods`) follow ``cam_train`` and run only for their ``cam.method``."""


@dataclass(frozen=True)
class Artefact:
    """A file a stage leaves in ``round_k/``; ``{}`` in ``path`` is an image name (one per image)."""

    path: str
    kind: str  # zip (torch checkpoints, .npz), npy, json, png
    images: str = ""  # "" | "cams" (train + extra eval images) | "query" (+ twins) | "train"

    @property
    def folder(self) -> str | None:
        """The folder that holds this artefact and nothing else, deleted when the stage is redone."""
        return self.path.split("/")[0] if "/" in self.path else None


STAGE_ARTEFACTS: dict[str, tuple[Artefact, ...]] = {
    "confounders": (Artefact("confounders/dictionary.npy", "npy"),
                    Artefact("confounders/prior.npy", "npy"),
                    Artefact("confounders/meta.json", "json"),
                    Artefact("confounders/queries.npy", "npy")),
    "cam_train": (Artefact("cam_net.pt", "zip"),),
    "cams": (Artefact("cams/{}.npz", "zip", "cams"),),
    "cam_eval": (),
    "twin_eval": (),  # its CAM cache twin_cams/ is rebuilt whenever the stage runs
    "ir_labels": (Artefact("ir_label/{}.png", "png", "train"),),
    "irn_train": (Artefact("irn.pt", "zip"),),
    "pseudo": (Artefact("pseudo/{}.png", "png", "cams"),),
    "pseudo_eval": (),
    "seg_train": (Artefact("seg.pt", "zip"),),
    "seg_eval": (),
    "seg_predict": (Artefact("pred/{}.png", "png", "query"),),
}
"""The files of each stage of :data:`STAGES` (keep in step with ``pipeline.run_round``)."""

STAGE_INPUTS: dict[str, tuple[tuple[int, str], ...]] = {
    "confounders": ((-1, "seg_predict"),),
    "cam_train": ((0, "confounders"),),
    "cams": ((0, "cam_train"), (0, "confounders")),
    "cam_eval": ((0, "cams"),),
    "twin_eval": ((0, "cam_train"), (0, "cam_eval")),
    "ir_labels": ((0, "cams"),),
    "irn_train": ((0, "ir_labels"), (0, "cam_train")),
    "pseudo": ((0, "cams"), (0, "irn_train")),
    "pseudo_eval": ((0, "pseudo"),),
    "seg_train": ((0, "pseudo"),),
    "seg_eval": ((0, "seg_train"),),
    "seg_predict": ((0, "seg_train"),),
}
"""The stages each stage is computed from, as (round offset, stage)."""


def _add_method_stages() -> None:
    """The CAM methods' own stages: their files and inputs; the stages computed from the round's
    CAM network also depend on those that make it."""
    for name, spec in method_stages().items():
        STAGE_ARTEFACTS[name] = tuple(Artefact(path, kind) for path, kind in spec.files)
        STAGE_INPUTS[name] = spec.inputs
        if spec.makes_cam_net:
            for dependent in ("cams", "twin_eval", "irn_train"):
                STAGE_INPUTS[dependent] = (*STAGE_INPUTS[dependent], (0, name))


_add_method_stages()
