"""``ContextAdjustment``: the one learnable place of CONTA's intervention (method.md Eq. 3, section 3).

Given the per-image query X_m (the image's predicted mask on the dictionary grid), the
confounder dictionary C = {c_1..c_n} and its prior P(c):

    q = W_1 X_m,   K = W_2 C,   alpha = softmax_i(q K_i^T / sqrt(e)),
    m = sum_i alpha_i P(c_i) c_i                       (a D = h*w vector, reshaped to (1, h, w))

which is the NWGM approximation of E_c[f(X, c)] in the backdoor adjustment
P(Y | do(X)) = sum_c P(Y | X, M = f(X, c)) P(c) (method.md section 1). The map m is image-aligned
(it lives on the full-image grid); :meth:`ContextAdjustment.align` carries it through the same
resize/flip/crop as the training crop, and the CAM network concatenates it to its last
features (2048 + 1 channels for ResNet-50) before the 1x1 classifier.

Choices where the paper is silent (method.md section 7): e = n + 1 and the 1/sqrt(e) scale as in
the official ``m_t.py`` snippet; W_1, W_2 bias-free (the snippet initialises the biases to zero),
initialised N(0, 0.02); classes never predicted (|S_i| = 0) are masked out of the softmax.
``m_scale="max"`` (optional) divides m by its spatial maximum, a deviation that makes the channel
comparable to post-ReLU features (the faithful default is "identity").

``attention="uniform"`` is a control, not CONTA: alpha_i = 1 / (number of valid classes) for every
image, so m = sum_i P(c_i) c_i / n is one fixed map, the same for all images, and W_1, W_2 do not
exist. It keeps everything the extra channel brings (a learnable, class-specific spatial bias)
and removes the image-specific attention, which is what Eq. 3 adds; a gain that the control
matches is not a gain from the intervention (docs/results.md).

``attention="exact"`` (``context.adjustment=exact``; our addition, not the paper's) gives up the
NWGM: the module returns every valid entry c_i as its own channel, (B, n, h, w), with the
weights P(c_i) / sum_j P(c_j) in ``alpha``, and the CAM network sums its head over them
(:meth:`causal_wsss.models.cam_net.CamNet.set_context_mixture`):
P(Y | do(X)) = sum_i P(Y | X, m = c_i) P(c_i), one trunk pass and n head evaluations.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backdoor import context_attention


class ContextOutput(NamedTuple):
    """m on the dictionary grid (B, 1, h, w) and the attention weights alpha (B, n)."""

    m: torch.Tensor
    alpha: torch.Tensor


class ContextAdjustment(nn.Module):
    """Eq. 3 of CONTA as a module, with the round's dictionary, prior and queries as buffers.

    Args:
        dictionary: (n, h, w) or (n+1, h, w) with ``has_background=True``: the class masks.
        prior: (n,) P(c_i).
        queries: (N, Dq) per-image queries of the training images (index = data set index),
            or None when queries are passed to :meth:`forward` directly.
        valid: (n,) bool, classes that may receive attention (default: prior > 0).
        embed_dim: e (default n + 1, as the official snippet).
        m_scale: "identity" (faithful) or "max".
        l2_normalize: L2-normalise queries and dictionary rows before projecting (an experiment
            flag of method.md 7.3).
        attention: "learned" (Eq. 3), "uniform" (the control described in the module docstring)
            or "exact" (every entry as a channel, for the exact backdoor sum).
    """

    def __init__(self, dictionary: torch.Tensor | np.ndarray, prior: torch.Tensor | np.ndarray, *,
                 queries: torch.Tensor | np.ndarray | None = None, query_dim: int | None = None,
                 has_background: bool = True, valid: torch.Tensor | np.ndarray | None = None,
                 embed_dim: int | None = None, m_scale: str = "identity",
                 l2_normalize: bool = False, attention: str = "learned") -> None:
        super().__init__()
        if attention not in ("learned", "uniform", "exact"):
            raise ValueError(f"attention must be 'learned', 'uniform' or 'exact', not {attention!r}")
        self.attention = attention
        masks = torch.as_tensor(np.asarray(dictionary), dtype=torch.float32)
        if has_background:
            masks = masks[1:]
        n, h, w = masks.shape
        prior_t = torch.as_tensor(np.asarray(prior), dtype=torch.float32)
        if prior_t.shape != (n,):
            raise ValueError(f"prior has shape {tuple(prior_t.shape)}, expected ({n},)")
        if m_scale not in ("identity", "max"):
            raise ValueError(f"m_scale must be 'identity' or 'max', not {m_scale!r}")
        valid_t = prior_t > 0 if valid is None else torch.as_tensor(np.asarray(valid)).bool()
        self.grid = (h, w)
        self.m_scale = m_scale
        self.l2_normalize = l2_normalize
        self.register_buffer("dictionary", masks.reshape(n, h * w))  # (n, D)
        self.register_buffer("prior", prior_t)  # (n,)
        self.register_buffer("valid", valid_t)  # (n,)
        if queries is not None:
            q = torch.as_tensor(np.asarray(queries))
            self.register_buffer("queries", q.to(torch.uint8) if q.max() <= 1 else q.float())
            query_dim = q.shape[1]
        else:
            self.queries = None
        if query_dim is None:
            query_dim = h * w
        self.embed_dim = embed_dim or n + 1
        if attention in ("uniform", "exact"):  # no projections: nothing to learn, unused under DDP
            self.w1 = self.w2 = None
            return
        self.w1 = nn.Linear(query_dim, self.embed_dim, bias=False)
        self.w2 = nn.Linear(h * w, self.embed_dim, bias=False)
        nn.init.normal_(self.w1.weight, std=0.02)
        nn.init.normal_(self.w2.weight, std=0.02)

    def forward(self, query: torch.Tensor | None = None, index: torch.Tensor | None = None
                ) -> ContextOutput:
        """m for a batch, from explicit queries (B, Dq) or data set indices (B,) into the buffer."""
        if query is None:
            if index is None or self.queries is None:
                raise ValueError("pass query (B, Dq), or index with queries stored in the module")
            query = self.queries[index.to(self.queries.device)]
        query = query.float()
        dictionary = self.dictionary
        if self.attention == "exact":
            weights = self.mixture_weights()  # (n_valid,)
            entries = dictionary[self.valid]  # (n_valid, D)
            m = entries.reshape(1, -1, *self.grid).expand(query.shape[0], -1, -1, -1)
            return self._finish(m, weights.expand(query.shape[0], -1))
        if self.attention == "uniform":
            valid = self.valid.float()
            alpha = (valid / valid.sum()).expand(query.shape[0], -1)  # (B, n)
            m = (alpha * self.prior) @ dictionary  # (B, D): the same map for every image
            return self._finish(m, alpha)
        if self.l2_normalize:
            query = F.normalize(query, dim=-1)
            dictionary = F.normalize(dictionary, dim=-1)
        m, alpha = context_attention(query, dictionary, self.prior, self.w1.weight, self.w2.weight,
                                     scale=1.0 / math.sqrt(self.embed_dim), mask=self.valid)
        if self.l2_normalize:  # the attention used normalised rows; m averages the raw masks
            m = (alpha * self.prior) @ self.dictionary
        return self._finish(m, alpha)

    def mixture_weights(self) -> torch.Tensor:
        """P(c_i) over the valid entries, renormalised to sum to 1: the exact sum's weights."""
        p = self.prior[self.valid]
        return p / p.sum().clamp_min(1e-12)

    def _finish(self, m: torch.Tensor, alpha: torch.Tensor) -> ContextOutput:
        if m.dim() == 2:
            m = m.reshape(-1, 1, *self.grid)  # (B, D) -> (B, 1, h, w)
        if self.m_scale == "max":  # per channel (one per entry under the exact sum)
            m = m / m.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        return ContextOutput(m=m, alpha=alpha)

    @staticmethod
    def align(m: torch.Tensor, crop_box: torch.Tensor, flipped: torch.Tensor,
              out_size: tuple[int, int]) -> torch.Tensor:
        """Carry image-aligned maps through a training crop (method.md 7.9).

        ``m`` (B, C, h, w) covers the whole original image; ``crop_box`` (B, 4) = (x0, y0, x1, y1)
        is the crop's region in normalised original coordinates (beyond [0, 1] where the crop was
        padded, which reads as zero context); ``flipped`` (B,) mirrors the result. Returns
        (B, C, *out_size), the context seen by the crop, sampled bilinearly.
        """
        box = crop_box.to(device=m.device, dtype=m.dtype)
        x0, y0, x1, y1 = box.unbind(dim=1)
        theta = torch.zeros(m.shape[0], 2, 3, device=m.device, dtype=m.dtype)
        theta[:, 0, 0] = x1 - x0
        theta[:, 0, 2] = x0 + x1 - 1
        theta[:, 1, 1] = y1 - y0
        theta[:, 1, 2] = y0 + y1 - 1
        grid = F.affine_grid(theta, [m.shape[0], m.shape[1], *out_size], align_corners=False)
        out = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        flip = flipped.to(device=m.device).bool()
        return torch.where(flip[:, None, None, None], out.flip(-1), out)


class ContextCamNet(nn.Module):
    """A CamNet whose context channel is CONTA's m, computed from the images' queries.

    ``cam_net.new_modules["context"]`` holds the :class:`ContextAdjustment` (so W1, W2 train in
    the 10x group with the classifier). ``forward(images, rows, crop_box, flipped)``: ``rows``
    index the query buffer; the image-aligned m is carried through the crop geometry.
    """

    def __init__(self, cam_net: nn.Module) -> None:
        super().__init__()
        self.cam_net = cam_net

    @property
    def context(self):
        return self.cam_net.new_modules["context"]

    def forward(self, images: torch.Tensor, rows: torch.Tensor, crop_box: torch.Tensor,
                flipped: torch.Tensor):
        m = self.context(index=rows).m  # (B, 1, g, g) on the full-image grid
        h, w = images.shape[-2:]
        out_size = (max(1, h // 4), max(1, w // 4))
        aligned = ContextAdjustment.align(m, crop_box, flipped, out_size)  # (B, 1, h/4, w/4)
        return self.cam_net(images, context=aligned)
