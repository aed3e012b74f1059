"""The training loop's guard against a non-finite loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from causal_wsss.errors import CausalWSSSError
from causal_wsss.train import train_one_epoch


def test_nan_loss_stops_with_one_message_naming_stage_and_step():
    model = nn.Linear(3, 1)
    loader = DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=4,
                        collate_fn=lambda rows: {"x": torch.stack([r[0] for r in rows])})
    calls = []

    def loss_fn(m, batch):
        calls.append(1)
        out = m(batch["x"]).mean()
        return out if len(calls) < 2 else out * float("nan")

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CausalWSSSError, match=r"seg: the loss is nan at step 2 .*learning rate"):
        train_one_epoch(model, loader, opt, loss_fn=loss_fn, device=torch.device("cpu"),
                        amp=False, progress=False, desc="seg")

