"""The stage table of a round: every stage in running order, the files each leaves in
``round_k/`` and the stages each is computed from.

Read by :mod:`causal_wsss.pipeline` (which runs the stages in this order) and by
:mod:`causal_wsss.runfolder` (which checks their files on resume and redoes a stage with every
stage computed from it). The interventions' own stages
(:func:`causal_wsss.interventions.intervention_stages`, CONTA's ``confounders`` ...) come first,
the CAM methods' own stages (:func:`causal_wsss.methods.method_stages`) after ``cam_train``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .interventions import intervention_stages
from .methods import method_stages

STAGES = (*intervention_stages(), "cam_train", *method_stages(), "cams", "cam_eval", "twin_eval",
          "ir_labels", "irn_train", "pseudo", "pseudo_eval", "seg_train", "seg_eval", "seg_predict")
"""Every stage a round may run; the interventions' stages come first and run only for their
``context.intervention`` in rounds >= 1; the CAM methods' own stages (``cam_expand`` ... of
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
    "cam_train": (),
    "cams": ((0, "cam_train"),),
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


def _add_own_stages() -> None:
    """The interventions' and the CAM methods' own stages: their files and inputs. ``cam_train``
    and the CAMs depend on every intervention stage (the network, its training images or its
    context come from them); the stages computed from the round's CAM network also depend on the
    method stages that make it."""
    for name, spec in intervention_stages().items():
        STAGE_ARTEFACTS[name] = tuple(Artefact(path, kind) for path, kind in spec.files)
        STAGE_INPUTS[name] = spec.inputs
        for dependent in ("cam_train", "cams"):
            STAGE_INPUTS[dependent] = (*STAGE_INPUTS[dependent], (0, name))
    for name, spec in method_stages().items():
        STAGE_ARTEFACTS[name] = tuple(Artefact(path, kind) for path, kind in spec.files)
        STAGE_INPUTS[name] = spec.inputs
        if spec.makes_cam_net:
            for dependent in ("cams", "twin_eval", "irn_train"):
                STAGE_INPUTS[dependent] = (*STAGE_INPUTS[dependent], (0, name))


_add_own_stages()
