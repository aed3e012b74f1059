"""The stage library: one module per step of a round, each a plain function of the config, the
data sets and the round's folder that returns the stage's record (a JSON-able dict).

==================  ===========================================================================
module              stages
==================  ===========================================================================
``datasets``        (loading) the round's data sets; which images get CAMs and context queries
``models``          (building) the CAM network of the config, a round's starting network
``confounders``     ``confounders``: CONTA's dictionary C, prior P(c), queries (rounds >= 1)
``cam_train``       ``cam_train``: the CAM classifier (or a transferred checkpoint)
``cams``            ``cams``, ``cam_eval``: multi-scale + flip CAMs and their scores
``twins``           ``twin_eval``: the do(context) figures on the twins split
``pseudo``          ``ir_labels``, ``irn_train``, ``pseudo``, ``pseudo_eval``
``segmentation``    ``seg_train``, ``seg_eval``, ``seg_predict``
==================  ===========================================================================

Stages import only from the layers below (data, metrics, models, the CAM/pseudo-mask/IRN/
segmentation operations, the plumbing); the CAM methods (:mod:`causal_wsss.methods`) build on
them, and :mod:`causal_wsss.pipeline` orders and caches them. docs/architecture.md draws the
layers.
"""
