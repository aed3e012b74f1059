"""CONTA's adjustment with a dictionary that holds the context's appearance (ours, not the paper's).

The paper's dictionary is a set of class-average masks, which on the benchmark is nearly one map
for every image (docs/results.md 0.1). Here the entries are *feature-space prototypes of the
context*: the trunk's features pooled over each training image's predicted background, clustered
into K prototypes c_1..c_K with frequencies P(c_k) (:mod:`causal_wsss.interventions.appearance`).
The query is the image's pooled feature q (from the previous round's network, fixed per image),
and Eq. 3 keeps its form:

    alpha = softmax_k((W_1 q)(W_2 c_k)^T / sqrt(e)),   m = sum_k alpha_k P(c_k) c_k   (C-vector)

m enters the head as C extra channels, constant over the feature map, so a class's logit gets
w_M . m: a learned function of *what the image's context looks like*. During training that term
can carry the label's dependence on the context, so the trunk's evidence need not; CAMs are made
without it (a CAM is the image's own evidence: the context columns see zeros).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..backdoor import context_attention
from .context import ContextCamNet, ContextOutput


class AppearanceAdjustment(nn.Module):
    """Eq. 3 over appearance prototypes: ``dictionary`` (K, C), ``prior`` (K,), ``queries``
    (N, C) of the training images (row = data set index); W_1, W_2 bias-free, N(0, 0.02) as
    :class:`~causal_wsss.models.context.ContextAdjustment`; e = K + 1."""

    def __init__(self, dictionary: torch.Tensor | np.ndarray, prior: torch.Tensor | np.ndarray,
                 queries: torch.Tensor | np.ndarray) -> None:
        super().__init__()
        entries = torch.as_tensor(np.asarray(dictionary), dtype=torch.float32)  # (K, C)
        prior_t = torch.as_tensor(np.asarray(prior), dtype=torch.float32)  # (K,)
        q = torch.as_tensor(np.asarray(queries), dtype=torch.float32)  # (N, C)
        if entries.dim() != 2 or prior_t.shape != (entries.shape[0],) or q.dim() != 2 \
                or q.shape[1] != entries.shape[1]:
            raise ValueError(f"dictionary {tuple(entries.shape)}, prior {tuple(prior_t.shape)} and "
                             f"queries {tuple(q.shape)} do not fit: expected (K, C), (K,), (N, C)")
        k, c = entries.shape
        self.register_buffer("dictionary", entries)
        self.register_buffer("prior", prior_t)
        self.register_buffer("valid", prior_t > 0)
        self.register_buffer("queries", q)
        self.embed_dim = k + 1
        self.l2_normalize = False
        self.attention = "learned"
        self.w1 = nn.Linear(c, self.embed_dim, bias=False)
        self.w2 = nn.Linear(c, self.embed_dim, bias=False)
        nn.init.normal_(self.w1.weight, std=0.02)
        nn.init.normal_(self.w2.weight, std=0.02)

    @property
    def channels(self) -> int:
        return int(self.dictionary.shape[1])

    def forward(self, query: torch.Tensor | None = None, index: torch.Tensor | None = None
                ) -> ContextOutput:
        """m (B, C, 1, 1) and alpha (B, K) from explicit queries (B, C) or rows (B,)."""
        if query is None:
            if index is None:
                raise ValueError("pass query (B, C) or index (B,) into the stored queries")
            query = self.queries[index.to(self.queries.device)]
        m, alpha = context_attention(query.float(), self.dictionary, self.prior, self.w1.weight,
                                     self.w2.weight, scale=1.0 / math.sqrt(self.embed_dim),
                                     mask=self.valid)
        return ContextOutput(m=m[:, :, None, None], alpha=alpha)


class AppearanceCamNet(ContextCamNet):
    """A CamNet whose ``C`` context channels are the appearance m, the same at every cell (no
    crop geometry to follow: m describes the whole image's context)."""

    def forward(self, images: torch.Tensor, rows: torch.Tensor, crop_box: torch.Tensor,
                flipped: torch.Tensor):
        return self.cam_net(images, context=self.context(index=rows).m)  # m: (B, C, 1, 1)
